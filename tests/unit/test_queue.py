"""Turns in order (`chat/queue.py`): one reply generates in a step at a time; what is sent
meanwhile is stored at once and answered in its turn, with everything before it in context."""

from __future__ import annotations

import pytest

from tests.unit.support import Listener, texts, turn
from workshop_chat.chat.domain import Event, Failed, KeepAlive, Message, Started, Waiting
from workshop_chat.chat.errors import RateLimited
from workshop_chat.chat.queue import ahead_of, busy
from workshop_chat.chat.team import LEFT_TEXT, while_member


def answer(model, text: str) -> None:
    model.wait_call()
    model.send(text)
    model.finish()


def waits(events: list[Event]) -> list[int]:
    return [e.ahead for e in events if isinstance(e, Waiting)]


def test_a_message_sent_while_a_reply_generates_waits_for_it_and_has_it_in_context(
    chat, store, model
):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    second = Listener(chat, turn("second", "m2"))
    queued = store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    assert queued.status == "queued"
    assert store.doc("s1", "define", "m2").text == "second"  # stored at once
    assert len(model.calls) == 1  # nothing asked while it waits
    model.send("one")
    model.finish()
    answer(model, "two")
    assert texts(first.join()) == "one"
    events = second.join()
    assert waits(events) == [1] and texts(events) == "two"
    assert isinstance(events[0], Waiting)  # the request is answered before its turn
    assert model.calls[-1] == [("user", "first"), ("model", "one"), ("user", "second")]
    assert len(model.calls) == 2
    assert store.doc("s1", "define", "m2~reply").status == "complete"


def test_replies_wait_in_the_order_their_messages_came(chat, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    store.now += 1
    second = Listener(chat, turn("second", "m2"))
    store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    store.now += 1
    third = Listener(chat, turn("third", "m3"))
    store.wait_for(lambda: store.doc("s1", "define", "m3~reply"))
    model.send("one")
    model.finish()
    answer(model, "two")
    answer(model, "three")
    assert [texts(x.join()) for x in (first, second, third)] == ["one", "two", "three"]
    assert waits(third.events)[0] == 2
    assert model.calls[-1][-3:] == [("user", "second"), ("model", "two"), ("user", "third")]


def test_past_the_queue_bound_a_message_is_refused_and_nothing_is_stored(make_chat, store, model):
    chat = make_chat(max_queued=1)
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    second = Listener(chat, turn("second", "m2"))
    store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    with pytest.raises(RateLimited) as refused:
        Listener(chat, turn("third", "m3")).join()
    assert refused.value.code == "step_busy" and refused.value.retry_after
    assert store.doc("s1", "define", "m3") is None
    model.send("one")
    model.finish()
    answer(model, "two")
    first.join(), second.join()
    assert len(model.calls) == 2


def test_a_sender_who_goes_while_waiting_still_gets_the_reply_made(chat, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    events = chat.run(turn("second", "m2"), "alice")
    assert isinstance(next(events), Waiting)
    events.close()  # the browser went
    model.send("one")
    model.finish()
    answer(model, "two")
    first.join()
    stored = store.wait_for(
        lambda: (m := store.doc("s1", "define", "m2~reply")) and m.status == "complete" and m
    )
    assert stored.text == "two"


def test_a_re_send_of_a_waiting_message_listens_to_the_same_wait(chat, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    second = Listener(chat, turn("second", "m2"))
    store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    again = Listener(chat, turn("second", "m2"))
    model.send("one")
    model.finish()
    answer(model, "two")
    first.join()
    assert texts(second.join()) == texts(again.join()) == "two"
    assert len(model.calls) == 2


def test_stop_ends_a_waiting_reply_without_asking_the_model(chat, ops, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    second = Listener(chat, turn("second", "m2"))
    store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    assert ops.stop("s1", "define", "alice") == 2
    first.join()
    events = second.join()
    assert events[-1].metadata["status"] == "stopped" and texts(events) == ""
    assert store.doc("s1", "define", "m2~reply").status == "stopped"
    assert len(model.calls) == 1


def test_a_regenerate_waits_for_the_reply_generating_and_deletes_nothing_meanwhile(
    chat, store, model
):
    answer_first = Listener(chat, turn("first", "m1"))
    answer(model, "one")
    answer_first.join()
    store.now += 1
    second = Listener(chat, turn("second", "m2"))
    model.wait_call()
    again = Listener(chat, turn("first", "m1", trigger="regenerate-message", target_id="m1~reply"))
    store.wait_for(lambda: again.events)
    assert isinstance(again.events[0], Waiting) and again.events[0].ahead == 1
    assert store.doc("s1", "define", "m2") is not None  # nothing cut while it waits
    model.send("two")
    model.finish()
    answer(model, "one again")
    assert texts(second.join()) == "two"
    assert texts(again.join()) == "one again"
    assert store.doc("s1", "define", "m2") is None  # the regenerate cut what came after


def test_a_waiting_reply_whose_instance_died_is_adopted_by_the_next_turn(chat, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    model.send("one")
    model.finish()
    first.join()
    # Another instance stored a waiting reply, then died: its lease lapses.
    other = store.open("s1", "define", "alice")
    from workshop_chat.chat.domain import UserMessage

    store.begin(other, UserMessage("x1", "orphan"), "x1~reply", "queue", store.now + 1, None)
    store.now += 20
    late = Listener(chat, turn("late", "m3"))
    answer(model, "for the orphan")
    answer(model, "for the late one")
    assert texts(late.join()) == "for the late one"
    assert store.doc("s1", "define", "x1~reply").text == "for the orphan"
    assert model.calls[-1][-3:] == [
        ("user", "orphan"),
        ("model", "for the orphan"),
        ("user", "late"),
    ]


def message(mid: str, status: str, at: float, lapsed: bool = False) -> Message:
    return Message(mid, "assistant", "", status, at, at, lapsed=lapsed)  # type: ignore[arg-type]


def test_what_a_waiting_reply_waits_for():
    pending = [
        message("dead", "streaming", 1, lapsed=True),  # holds nobody up
        message("live", "streaming", 2),
        message("orphan", "queued", 3, lapsed=True),  # adopted, so waited for
        message("me", "queued", 4),
        message("later", "queued", 5),
    ]
    assert [m.id for m in ahead_of(pending, "me") or []] == ["live", "orphan"]
    assert ahead_of(pending, "gone") is None
    assert [m.id for m in busy(pending)] == ["live", "me", "later"]
    assert [m.id for m in busy(pending, but="live")] == ["me", "later"]


def test_a_members_stream_ends_once_they_are_out_and_not_before():
    clock = iter(range(100)).__next__
    member = [True, True, False]
    out = list(
        while_member(iter([Started("r")] + [KeepAlive()] * 10), lambda: member.pop(0), 2, clock)
    )
    assert isinstance(out[-1], Failed) and out[-1].error_text == LEFT_TEXT
    assert len(out) == 6 and not member


def test_a_re_send_on_another_instance_follows_the_wait_and_then_the_reply(make_chat, store, model):
    here, elsewhere = make_chat(), make_chat()  # two processes, one store
    first = Listener(here, turn("first", "m1"))
    model.wait_call()
    store.now += 1
    second = Listener(here, turn("second", "m2"))
    store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    again = Listener(elsewhere, turn("second", "m2"))
    store.wait_for(lambda: again.events)
    assert again.events[0] == Waiting("m2~reply", 1)
    model.send("one")
    model.finish()
    answer(model, "two")
    first.join(), second.join()
    assert texts(again.join()) == "two"
    assert len(model.calls) == 2  # the follower asked nothing
