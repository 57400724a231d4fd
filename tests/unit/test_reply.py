"""One reply's life: settle once, stall vs finish, checkpoints and finals that fail or lose."""

from __future__ import annotations

from tests.unit.support import Listener, ends, limits, texts, turn
from workshop_chat.chat.domain import (
    CUT_TEXT,
    REPLACED_TEXT,
    SAVE_TEXT,
    STALL_TEXT,
    Ending,
    Failed,
    Finished,
)
from workshop_chat.chat.errors import ModelFailed, ModelUnavailable
from workshop_chat.chat.reply import Reply


def start(chat, model, text: str = "Hello"):
    listener = Listener(chat, turn(text))
    model.wait_call()
    return listener


def reply_of(chat) -> Reply:
    (reply,) = chat.local("s1", claimed=False)
    return reply


def test_a_reply_ends_once_whoever_asks_first(chat, store, model):
    listener = start(chat, model)
    model.send("part")
    reply = reply_of(chat)
    _wait_text(reply, "part")
    assert reply.end(Ending("error", "error", failure=Failed(CUT_TEXT)))
    assert not reply.end(Ending("complete", "stop"))
    model.send(" more")
    model.finish()
    events = listener.join()
    assert len(ends(events)) == 1 and events[-1].error_text == CUT_TEXT
    stored = store.doc("s1", "define", "m1~reply")
    assert (stored.status, stored.text) == ("error", texts(events)) == ("error", "part")
    assert model.wait_closed(1) == 1  # ending it closed the model's stream


def test_a_silent_upstream_ends_by_the_read_deadline_and_a_late_finish_changes_nothing(
    make_chat, store, model
):
    chat = make_chat(limits(stall_seconds=0.05))
    listener = start(chat, model)
    model.send("so far")
    events = listener.join()
    assert events[-1] == Failed(STALL_TEXT, metadata=events[-1].metadata)
    model.finish()
    stored = store.doc("s1", "define", "m1~reply")
    assert (stored.status, stored.text) == ("error", "so far")
    assert len([w for batch in store.batches for w in batch if w.ending]) == 1


def test_the_total_limit_ends_a_reply_that_keeps_talking(make_chat, store, model):
    chat = make_chat(limits(stall_seconds=30, reply_timeout_seconds=0.1))
    listener = start(chat, model)
    model.send("a", "b")
    events = listener.join()
    assert events[-1].error_text == STALL_TEXT
    assert store.doc("s1", "define", "m1~reply").status == "error"


def test_a_checkpoint_that_fails_is_skipped_and_the_reply_still_completes_whole(chat, store, model):
    listener = start(chat, model)
    model.send("first ")
    reply = reply_of(chat)
    _wait_text(reply, "first ")
    store.failing_writes = 1
    chat.checkpointer.flush(everything=True)  # fails: skipped, not settled
    assert store.doc("s1", "define", "m1~reply").text == ""
    chat.checkpointer.flush(everything=True)
    assert store.doc("s1", "define", "m1~reply").text == "first "
    model.send("second")
    model.finish()
    events = listener.join()
    assert isinstance(events[-1], Finished)
    stored = store.doc("s1", "define", "m1~reply")
    assert (
        (stored.status, stored.text) == ("complete", "first second") == ("complete", texts(events))
    )


def test_a_checkpoint_that_finds_another_generation_ends_the_reply_as_replaced(chat, store, model):
    listener = start(chat, model)
    model.send("mine")
    _wait_text(reply_of(chat), "mine")
    store.take_over("s1", "define", "m1~reply")
    chat.checkpointer.flush(everything=True)
    events = listener.join()
    assert events[-1] == Failed(REPLACED_TEXT, cause="replaced")
    assert store.doc("s1", "define", "m1~reply").generation == "other"
    assert store.doc("s1", "define", "m1~reply").text == ""
    assert model.wait_closed(1) == 1


def test_a_final_write_that_fails_is_retried_then_the_reply_completes(chat, store, model):
    listener = start(chat, model)
    store.failing_writes = 2
    model.send("kept")
    model.finish()
    events = listener.join()
    assert isinstance(events[-1], Finished)
    assert store.doc("s1", "define", "m1~reply").status == "complete"


def test_a_final_write_that_never_lands_is_an_error_and_never_complete(chat, store, model):
    listener = start(chat, model)
    store.failing_writes = 100
    model.send("lost")
    model.finish()
    events = listener.join()
    assert events[-1].error_text == SAVE_TEXT
    assert store.doc("s1", "define", "m1~reply").status == "streaming"  # lapses: interrupted


def test_a_final_that_loses_the_claim_says_replaced(chat, store, model):
    listener = start(chat, model)
    model.send("mine")
    _wait_text(reply_of(chat), "mine")
    store.take_over("s1", "define", "m1~reply")
    model.finish()
    events = listener.join()
    assert events[-1] == Failed(REPLACED_TEXT, cause="replaced")
    assert store.doc("s1", "define", "m1~reply").generation == "other"


def test_model_failures_map_to_error_endings_with_the_partial_text(chat, store, model):
    listener = start(chat, model)
    model.send("half", ModelFailed("cut"))
    events = listener.join()
    assert events[-1].error_text == CUT_TEXT
    assert store.doc("s1", "define", "m1~reply").text == "half"


def test_an_unavailable_model_before_any_text_is_a_busy_ending(chat, store, model):
    listener = start(chat, model)
    model.send(ModelUnavailable(7))
    events = listener.join()
    assert events[-1].cause == "model_unavailable" and events[-1].retry_after == 7
    assert texts(events) == ""


def test_a_reply_is_cut_at_the_size_limit_with_finish_length(make_chat, store, model):
    chat = make_chat(limits(max_reply_bytes=5))
    listener = start(chat, model)
    model.send("abc", "défg")
    events = listener.join()
    assert texts(events) == "abcd" and events[-1].finish_reason == "length"
    assert store.doc("s1", "define", "m1~reply").text == "abcd"


def test_sigterm_checkpoints_every_reply_in_flight(chat, store, model):
    start(chat, model)
    model.send("in flight")
    _wait_text(reply_of(chat), "in flight")
    assert chat.checkpoint_all() == 1
    assert store.doc("s1", "define", "m1~reply").text == "in flight"
    model.finish()


def _wait_text(reply: Reply, text: str) -> None:
    """Until the model's text is in and the claim confirmed (the two race by design)."""
    with reply._cond:
        assert reply._cond.wait_for(lambda: reply.text() == text and reply.claim is not None, 5)


# --- Stop -----------------------------------------------------------------------------------


def test_stop_keeps_the_text_so_far_closes_the_model_and_stores_stopped(chat, ops, store, model):
    listener = start(chat, model)
    model.send("so far")
    _wait_text(reply_of(chat), "so far")
    assert ops.stop("s1", "define", "alice") == 1
    events = listener.join()
    assert texts(events) == "so far"
    assert isinstance(events[-1], Finished) and events[-1].metadata["status"] == "stopped"
    stored = store.doc("s1", "define", "m1~reply")
    assert (stored.status, stored.text) == ("stopped", "so far")
    assert model.wait_closed(1) == 1
    assert ops.stop("s1", "define", "alice") == 0  # nothing in flight: nothing written
    assert len([w for batch in store.batches for w in batch]) == 1


def test_stop_racing_finish_ends_the_reply_once_whichever_came_first(chat, ops, store, model):
    listener = start(chat, model)
    model.send("whole")
    reply = reply_of(chat)
    _wait_text(reply, "whole")
    model.finish()
    stopped = ops.stop("s1", "define", "alice")
    events = listener.join()
    assert len(ends(events)) == 1
    stored = store.doc("s1", "define", "m1~reply")
    assert stored.status == ("stopped" if stopped else "complete")
    assert stored.text == texts(events) == "whole"


def test_stop_racing_regenerate_stops_only_the_generation_it_found(chat, ops, store, model):
    first = start(chat, model)
    model.send("old")
    old = reply_of(chat)
    _wait_text(old, "old")
    regenerate = Listener(chat, turn(trigger="regenerate-message", target_id="m1~reply"))
    model.wait_call()
    assert first.join()[-1].cause == "replaced"
    assert ops.stop("s1", "define", "alice") == 1  # the new generation
    events = regenerate.join()
    assert isinstance(events[-1], Finished) and events[-1].metadata["status"] == "stopped"
    assert store.doc("s1", "define", "m1~reply").status == "stopped"


def test_stop_during_a_checkpoint_stores_stopped_with_the_text_the_client_saw(chat, store, model):
    listener = start(chat, model)
    model.send("before ")
    reply = reply_of(chat)
    _wait_text(reply, "before ")
    store.failing_writes = 1  # the checkpoint in flight fails
    chat.checkpointer.flush(everything=True)
    reply.stop()
    model.send("after")  # arrives too late: not part of the reply
    events = listener.join()
    stored = store.doc("s1", "define", "m1~reply")
    assert (stored.status, stored.text) == ("stopped", "before ") == ("stopped", texts(events))


def test_a_stop_asked_on_another_instance_reaches_the_generation_through_its_document(
    chat, store, model
):
    listener = start(chat, model)
    model.send("working")
    _wait_text(reply_of(chat), "working")
    assert store.request_stop("s1", "define", "m1~reply")  # what another instance writes
    chat.checkpointer.flush(everything=True)  # the next checkpoint finds it
    events = listener.join()
    assert events[-1].metadata["status"] == "stopped"
    assert store.doc("s1", "define", "m1~reply").status == "stopped"
    assert model.wait_closed(1) == 1


def test_stop_on_a_session_of_another_user_is_not_found(chat, ops, store, model):
    import pytest

    from workshop_chat.chat.errors import NotFound

    listener = start(chat, model)
    with pytest.raises(NotFound):
        ops.stop("s1", "define", "mallory")
    model.finish()
    assert isinstance(listener.join()[-1], Finished)
