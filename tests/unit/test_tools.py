"""The round loop: a reply's tool calls run between model rounds, within MAX_TOOL_ROUNDS; a call
that needs approval ends the reply until the team answers; a stop during a round ends it."""

from __future__ import annotations

import threading

from tests.unit.support import Listener, ends, limits, texts, turn
from workshop_chat.chat.domain import (
    Answer,
    Approval,
    Finished,
    NextStep,
    ToolDone,
    ToolStarted,
)
from workshop_chat.chat.ports import ModelDone, ModelToolCall

ADD = ModelToolCall("add_board_items", {"items": [{"kind": "idea", "title": "Pager-free ward"}]})


def tool_events(events):
    return [e for e in events if isinstance(e, ToolStarted | ToolDone | NextStep)]


def test_a_call_runs_and_the_model_is_asked_again_with_its_result(chat, store, model, board):
    listener = Listener(chat, turn("Ideas?"))
    model.wait_call()
    model.send("Adding one. ", ADD, ModelDone("stop"))
    model.wait_call()
    model.send("Done.", ModelDone("stop"))
    events = listener.join()
    started, done, step = tool_events(events)
    assert started.call.input == ADD.args and started.call.at == len("Adding one. ")
    assert done.call.state == "output-available"
    (item,) = board.items("s1")
    assert done.call.output == {"ids": [item.id]} and item.title == "Pager-free ward"
    assert isinstance(step, NextStep) and texts(events) == "Adding one. Done."
    # The first round declared the tools; the second got the call and its result back.
    assert [t.name for t in model.tools[0]] == [
        "add_board_items",
        "update_board_item",
        "remove_board_item",
    ]
    second = model.calls[1]
    assert second[-2:] == [("model", "Adding one. "), ("user", "")]
    assert model.results[1][len(second) - 1] == (done.call,)
    stored = store.doc("s1", "define", "m1~reply")
    assert stored.tools == (done.call,) and stored.steps == (len("Adding one. "),)


def test_bad_arguments_become_an_error_result_and_write_nothing(chat, model, board):
    listener = Listener(chat, turn())
    model.wait_call()
    bad = ModelToolCall("add_board_items", {"items": [{"kind": "vibe", "title": "x"}]})
    model.send(bad, ModelDone("stop"))
    model.wait_call()
    model.send("Sorry.", ModelDone("stop"))
    (_, done, _) = tool_events(listener.join())
    assert done.call.state == "output-error" and done.call.error_text.startswith("kind must be")
    assert board.items("s1") == [] and board.writes == 0


def test_the_last_round_allowed_declares_no_tools(make_chat, model, board):
    chat = make_chat(limits(max_tool_rounds=1))
    listener = Listener(chat, turn())
    model.wait_call()
    model.send(ADD, ModelDone("stop"))
    model.wait_call()
    model.send("Words only.", ModelDone("stop"))
    events = listener.join()
    assert model.tools[1] == () and len(model.calls) == 2
    assert texts(events) == "Words only." and len(board.items("s1")) == 1


def test_a_removal_waits_for_approval_and_the_answer_carries_the_reply_on(
    chat, store, model, board
):
    listener = Listener(chat, turn())
    model.wait_call()
    model.send(ADD, ModelDone("stop"))
    model.wait_call()
    model.send("Added.", ModelDone("stop"))
    listener.join()
    (item,) = board.items("s1")
    asking = Listener(chat, turn("Drop it", "m2"))
    model.wait_call()
    model.send(ModelToolCall("remove_board_item", {"id": item.id}), ModelDone("stop"))
    events = asking.join()
    (asked,) = [e.call for e in tool_events(events) if isinstance(e, ToolDone)]
    assert asked.state == "approval-requested" and asked.approval_id
    assert ends(events)[0] == Finished("tool-calls", ends(events)[0].metadata)
    assert len(model.calls) == 3 and board.items("s1") == [item]  # nothing ran, nothing asked
    answer = Approval("m2~reply", (Answer(asked.approval_id, True),))
    carried = Listener(chat, turn("", "m2~reply", approval=answer))
    model.wait_call()
    model.send("Removed.", ModelDone("stop"))
    events = carried.join()
    assert events[0].continued and isinstance(events[1], ToolDone)
    assert events[1].call.state == "output-available" and board.items("s1") == []
    stored = store.doc("s1", "define", "m2~reply")
    assert (stored.status, stored.finish_reason, stored.text) == ("complete", "stop", "Removed.")
    assert stored.tools[0].approved is True


def test_a_stop_during_a_tool_round_ends_the_reply_where_it_is(chat, ops, store, model, board):
    board.gate = threading.Event()
    listener = Listener(chat, turn())
    model.wait_call()
    model.send("Adding. ", ADD, ModelDone("stop"))
    (reply,) = chat.local("s1", claimed=False)
    while not any(isinstance(e, ToolStarted) for e in reply._events):
        threading.Event().wait(0.01)
    assert ops.stop("s1", "define", "alice") == 1
    board.gate.set()
    events = listener.join()
    assert ends(events)[0].metadata["status"] == "stopped"
    assert len(model.calls) == 1  # no round after the stop
    stored = store.doc("s1", "define", "m1~reply")
    assert stored.status == "stopped" and stored.text == "Adding. "
    assert [c.state for c in stored.tools] == ["input-available"]
