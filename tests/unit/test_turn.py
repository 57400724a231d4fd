"""Turns against the in-memory store and a scripted model: claims, collapse, races, takeovers."""

from __future__ import annotations

import threading

import pytest

from tests.unit.support import Listener, ends, texts, turn
from workshop_chat.chat.domain import (
    REPLACED_TEXT,
    Content,
    Ending,
    Failed,
    Finished,
    KeepAlive,
    Message,
    Started,
    UserMessage,
)
from workshop_chat.chat.errors import RateLimited, StoreUnavailable
from workshop_chat.chat.ports import ReplyWrite, WriteOutcome


def test_a_turn_streams_and_the_store_holds_exactly_what_was_sent(chat, store, model):
    listener = Listener(chat, turn())
    model.wait_call()
    model.send("Hel", "lo")
    model.finish()
    events = listener.join()
    assert isinstance(events[0], Started) and events[0].message_id == "m1~reply"
    assert texts(events) == "Hello"
    assert ends(events) == [events[-1]]
    assert isinstance(events[-1], Finished) and events[-1].finish_reason == "stop"
    reply = store.doc("s1", "define", "m1~reply")
    assert (reply.text, reply.status, reply.finish_reason) == ("Hello", "complete", "stop")
    assert model.calls == [[("user", "Hello")]]
    assert chat.local("s1", claimed=False) == []


def test_the_model_is_asked_before_the_claim_commits_and_text_waits_for_it(chat, store, model):
    store.claim_gate = threading.Event()
    listener = Listener(chat, turn())
    model.wait_call()  # the claim's commit is still held back
    model.send("early")
    model.finish()
    assert listener.events == []
    store.claim_gate.set()
    events = listener.join()
    assert texts(events) == "early"
    assert store.doc("s1", "define", "m1~reply").text == "early"


def test_twenty_identical_requests_on_one_instance_make_one_model_call(chat, store, model):
    store.claim_gate = threading.Event()
    first = Listener(chat, turn("twins"))
    model.wait_call()
    twins = [Listener(chat, turn("twins")) for _ in range(19)]
    store.claim_gate.set()
    model.send("one reply")
    model.finish()
    for listener in [first, *twins]:
        assert texts(listener.join()) == "one reply"
    assert len(model.calls) == 1
    assert list(store.messages[("s1", "define")]) == ["m1", "m1~reply"]


def test_a_claim_that_loses_cancels_its_model_call(chat, store, model):
    store.claim_gate = threading.Event()
    listener = Listener(chat, turn("race"))
    model.wait_call()
    # Another instance wins the same turn and finishes it before our commit lands.
    store.messages[("s1", "define")] = {
        "m1": Message("m1", "user", "race", "complete", store.now, store.now),
        "m1~reply": Message(
            "m1~reply", "assistant", "theirs", "complete", store.now + 0.001, store.now, "m1"
        ),
    }
    for mid in ("m1", "m1~reply"):
        store._bump(("s1", "define"), mid)
    store.claim_gate.set()
    events = listener.join()
    assert texts(events) == "theirs"  # replayed from the store
    assert model.wait_closed(1) == 1 and len(model.calls) == 1


def test_storage_down_before_the_turn_is_unavailable_and_the_model_is_never_called(
    chat, store, model
):
    store.unavailable = True
    with pytest.raises(StoreUnavailable):  # the HTTP edge answers 503 storage_unavailable
        chat.run(turn(), "alice")
    assert model.calls == []


def test_storage_failing_at_the_claim_cancels_the_model_call(chat, store, model):
    store.claim_gate = threading.Event()
    listener = Listener(chat, turn())
    model.wait_call()
    store.unavailable = True
    store.claim_gate.set()
    with pytest.raises(StoreUnavailable):
        listener.join()
    assert model.wait_closed(1) == 1
    assert chat.local("s1", claimed=False) == []


def test_a_resend_of_a_settled_reply_replays_it_without_a_model_call(chat, store, model):
    listener = Listener(chat, turn())
    model.wait_call()
    model.send("done")
    model.finish()
    listener.join()
    again = list(chat.run(turn(), "alice"))
    assert texts(again) == "done" and isinstance(again[-1], Finished)
    assert len(model.calls) == 1


def test_a_retry_after_a_crash_takes_the_lapsed_reply_over_and_stores_it_whole(chat, store, model):
    # A dead instance's generation: claimed, part of its text checkpointed, then silence.
    dead = store.begin(
        chat.store.open("s1", "define", "alice"),
        turn("again").user,
        "m1~reply",
        "new",
        store.now,
        None,
    )
    store.messages[("s1", "define")]["m1~reply"] = store.messages[("s1", "define")][
        "m1~reply"
    ].__class__(**{**store.doc("s1", "define", "m1~reply").__dict__, "text": "half a rep"})
    assert dead is not None
    retry = Listener(chat, turn("again"))
    store.now += store.lease_seconds + 1  # its lease lapses while the retry follows it
    model.wait_call()
    model.send("a whole reply")
    model.finish()
    events = retry.join()
    assert texts(events) == "a whole reply"  # none of the dead generation's text
    assert isinstance(events[-1], Finished)
    reply = store.doc("s1", "define", "m1~reply")
    assert (reply.text, reply.status) == ("a whole reply", "complete")
    assert reply.generation != dead.generation


def test_a_follower_relays_another_instances_reply_once_it_is_seen_moving(chat, store, model):
    other = store.begin(
        chat.store.open("s1", "define", "alice"),
        turn().user,
        "m1~reply",
        "new",
        store.now,
        None,
    )
    from workshop_chat.chat.domain import Ending
    from workshop_chat.chat.ports import ReplyWrite

    follower = Listener(chat, turn())
    assert store.write_replies([ReplyWrite(other, Content("Hel"))]) == [WriteOutcome.WROTE]
    final = ReplyWrite(other, Content("Hello"), Ending("complete", "stop"))
    assert store.write_replies([final]) == [WriteOutcome.WROTE]
    events = [e for e in follower.join() if not isinstance(e, KeepAlive)]
    assert texts(events) == "Hello"
    assert isinstance(events[-1], Finished)
    assert model.calls == []


def test_regenerate_on_the_same_instance_replaces_the_generation_in_flight(chat, store, model):
    first = Listener(chat, turn())
    model.wait_call()
    model.send("old text")
    while not first.events:  # claimed: the regenerate must find the reply stored
        threading.Event().wait(0.01)
    regenerate = Listener(chat, turn(trigger="regenerate-message", target_id="m1~reply"))
    model.wait_call()
    model.send("new text")
    model.finish()
    old_events, new_events = first.join(), regenerate.join()
    assert old_events[-1] == Failed(REPLACED_TEXT, cause="replaced")
    assert texts(new_events) == "new text"
    assert store.doc("s1", "define", "m1~reply").text == "new text"
    assert model.wait_closed(2) == 2


def test_history_reports_a_lapsed_reply_as_interrupted(chat, ops, store):
    store.begin(
        chat.store.open("s1", "define", "alice"), turn().user, "m1~reply", "new", store.now, None
    )
    assert [m.status for m in ops.history("s1", "define", "alice", 200).messages] == [
        "complete",
        "streaming",
    ]
    store.now += store.lease_seconds + 1
    assert [m.status for m in ops.history("s1", "define", "alice", 200).messages] == [
        "complete",
        "interrupted",
    ]


def test_store_errors_surface_on_history(chat, ops, store):
    store.unavailable = True
    with pytest.raises(StoreUnavailable):
        ops.history("s1", "define", "alice", 200)
    with pytest.raises(StoreUnavailable):
        store.reply("s1", "define", "x")


def test_resume_on_the_generating_instance_replays_from_the_start_then_goes_live(
    chat, ops, store, model
):
    listener = Listener(chat, turn())
    model.wait_call()
    model.send("first ")
    while not listener.events:
        threading.Event().wait(0.01)
    resumed = ops.resume("s1", "define", "alice")
    model.send("second")
    model.finish()
    events = list(resumed)
    assert events[0] == listener.join()[0]  # the same start, the same messageId
    assert texts(events) == "first second" == texts(listener.events)
    assert ops.resume("s1", "define", "alice") is None  # settled: nothing to resume


def test_resume_of_a_session_that_is_not_yours_is_not_found(chat, ops, store, model):
    from workshop_chat.chat.errors import NotFound

    listener = Listener(chat, turn())
    model.wait_call()
    with pytest.raises(NotFound):
        ops.resume("s1", "define", "mallory")
    model.finish()
    listener.join()


def test_a_claim_that_finds_the_session_moved_but_the_conversation_unchanged_keeps_its_call(
    chat, store, model
):
    store.claim_gate = threading.Event()
    listener = Listener(chat, turn("first"))
    model.wait_call()
    store.touch("s1")  # a summary of another step lands between the look and the claim
    store.claim_gate.set()
    model.send("one")
    model.finish()
    assert texts(listener.join()) == "one"
    assert len(model.calls) == 1 and model.closed == 1


def test_a_turn_that_landed_first_is_in_the_context_of_the_one_that_waited(chat, store, model):
    first = Listener(chat, turn("first", "m1"))
    model.wait_call()
    model.send("r1")
    model.finish()
    first.join()
    gate = store.claim_gate = threading.Event()
    second = Listener(chat, turn("second", "m2"))
    model.wait_call()
    # Another instance's turn lands first: this claim fails and its call is cancelled; the
    # step is busy now, so the message is stored to wait for that reply.
    store.claim_gate = None
    other = store.open("s1", "define", "alice")
    claim = store.begin(
        other, UserMessage("x1", "elsewhere"), "x1~reply", "new", store.now + 1, None
    )
    assert claim is not None
    store.now += 2
    gate.set()
    assert model.wait_closed(2) == 2  # the call made without it was cancelled
    waited = store.wait_for(lambda: store.doc("s1", "define", "m2~reply"))
    assert waited.status == "queued" and len(model.calls) == 2
    ending = Ending("complete", "stop", model="m")
    store.write_replies([ReplyWrite(claim, Content("there"), ending)])
    model.wait_call()
    model.send("fresh")
    model.finish()
    assert texts(second.join()) == "fresh"
    assert len(model.calls) == 3
    assert model.calls[-1] == [
        ("user", "first"),
        ("model", "r1"),
        ("user", "elsewhere"),
        ("model", "there"),
        ("user", "second"),
    ]


def test_a_user_over_the_rate_limit_gets_no_model_call_and_only_calls_are_counted(
    make_chat, store, model
):
    chat = make_chat(rate_limit_per_minute=2)
    for i in range(2):
        listener = Listener(chat, turn(f"t{i}", f"m{i}"))
        model.wait_call()
        model.send("ok")
        model.finish()
        listener.join()
    again = Listener(chat, turn("t0", "m0"))  # a re-send replays: no call, not counted
    assert texts(again.join()) == "ok"
    with pytest.raises(RateLimited) as refused:
        Listener(chat, turn("t2", "m2")).join()
    assert 1 <= refused.value.retry_after <= 60
    assert len(model.calls) == 2 and store.quotas["alice"].count == 2
