"""The board's rules: what a tool call or a PATCH body may hold, the ids a retried call finds
again, the workshop order, and where a reply's calls sit among its text."""

from __future__ import annotations

import pytest

from workshop_chat.chat.board import (
    MAX_ITEMS_PER_CALL,
    BoardError,
    BoardItem,
    NewItem,
    check_added,
    check_change,
    check_removed,
    check_updated,
    in_workshop_order,
    item_id_for,
)
from workshop_chat.chat.domain import NextStep, TextDelta, ToolCall, ToolDone, ToolStarted, layout


def test_good_arguments_are_taken_trimmed():
    items = check_added({"items": [{"kind": "hmw", "title": " How might we… ", "detail": "x"}]})
    assert items == (NewItem("hmw", "How might we…", "x"),)
    assert check_added({"items": [{"kind": "pov", "title": "t"}]})[0].detail == ""
    assert check_updated({"id": "b123", "detail": "more"}).detail == "more"
    assert check_removed({"id": "b-1_2"}) == "b-1_2"


@pytest.mark.parametrize(
    "args",
    [
        None,
        [],
        {},
        {"items": []},
        {"items": "x"},
        {"items": [{"kind": "vibe", "title": "t"}]},
        {"items": [{"kind": "idea"}]},
        {"items": [{"kind": "idea", "title": "  "}]},
        {"items": [{"kind": "idea", "title": "t" * 201}]},
        {"items": [{"kind": "idea", "title": "t", "detail": "d" * 2001}]},
        {"items": [{"kind": "idea", "title": "t", "owner": "me"}]},
        {"items": [{"kind": "idea", "title": "\ud800"}]},
        {"items": [{"kind": "idea", "title": "t"}] * (MAX_ITEMS_PER_CALL + 1)},
        {"items": [{"kind": "idea", "title": "t"}], "extra": 1},
    ],
)
def test_bad_add_arguments_are_refused_with_a_message_that_quotes_nothing(args):
    with pytest.raises(BoardError) as refused:
        check_added(args)
    assert "\ud800" not in refused.value.message and "owner" not in refused.value.message


@pytest.mark.parametrize(
    "args",
    [{}, {"id": ""}, {"id": "a/b"}, {"id": "é"}, {"id": "x" * 65}, {"id": 3}, {"id": "b1"}],
)
def test_bad_update_arguments_are_refused(args):
    with pytest.raises(BoardError):
        check_updated(args)


def test_a_change_needs_something_to_change():
    with pytest.raises(BoardError):
        check_change("b1", {})
    with pytest.raises(BoardError):
        check_change("b1", {"title": ""})
    assert check_change("b1", {"title": "new"}).title == "new"


def test_ids_are_the_same_for_the_same_call_and_differ_otherwise():
    first = item_id_for("m1~reply", "m1~reply-call-1", 0)
    assert first == item_id_for("m1~reply", "m1~reply-call-1", 0)
    others = {
        item_id_for("m1~reply", "m1~reply-call-1", 1),
        item_id_for("m1~reply", "m1~reply-call-2", 0),
        item_id_for("m2~reply", "m1~reply-call-1", 0),
    }
    assert first not in others and len(others) == 3 and check_removed({"id": first}) == first


def test_the_board_is_in_workshop_order():
    def item(i, step, kind, at):
        return BoardItem(i, kind, i, "", step, "facilitator", None, at, at)

    items = [
        item("c", "ideate", "idea", 1),
        item("a", "empathize", "need", 3),
        item("b", "empathize", "insight", 4),
        item("d", "retro", "feedback", 0),
    ]
    order = {"empathize": 0, "ideate": 1}
    assert [i.id for i in in_workshop_order(items, order)] == ["b", "a", "c", "d"]


def test_layout_places_calls_after_their_rounds_text_and_steps_after_their_calls():
    one = ToolCall("c1", "add_board_items", {}, 0, 5, "output-available", {"ids": []})
    two = ToolCall("c2", "add_board_items", {}, 1, 9, "input-available")
    events = layout("Hello then done", (one, two), (5, 9))
    assert events == [
        TextDelta("Hello"),
        ToolStarted(one),
        ToolDone(one),
        NextStep(),
        TextDelta(" the"),
        ToolStarted(two),
        NextStep(),
        TextDelta("n done"),
    ]
