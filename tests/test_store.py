"""Firestore adapter on the emulator: create-if-absent, the history cache, claims, ownership."""

from __future__ import annotations

import pytest

from workshop_chat.store import FirestoreStore
from workshop_chat.turn import LostClaim, NotFound, UserMessage

NOW = 1_800_000_000.0


@pytest.fixture
def store(db) -> FirestoreStore:
    return FirestoreStore(db)


def begin_new(
    store: FirestoreStore, text: str = "Hi", mid: str = "u1", uid: str = "alice", now: float = NOW
):
    conversation = store.open("s1", "define", uid)
    return store.begin(conversation, UserMessage(mid, text), f"{mid}~reply", "new", now, None)


def test_a_new_turn_creates_session_step_user_message_and_claimed_reply(store, db):
    claim = begin_new(store)
    assert claim is not None
    session = db.document("sessions/s1").get().to_dict()
    assert session["ownerUid"] == "alice"
    reply = db.document("sessions/s1/steps/define/messages/u1~reply").get().to_dict()
    assert (reply["status"], reply["replyTo"], reply["parts"]) == ("streaming", "u1", [])
    assert claim.created_at == NOW + 0.001


def test_a_twin_new_turn_loses_the_race_and_writes_nothing(store, db):
    assert begin_new(store) is not None
    before = db.document("sessions/s1/steps/define/messages/u1").get().update_time
    twin = FirestoreStore(db)
    conversation = twin.open("s1", "define", "alice")
    conversation.messages = []  # what a racing request saw before the winner's write
    assert (
        twin.begin(conversation, UserMessage("u1", "Hi"), "u1~reply", "new", NOW + 5, None) is None
    )
    assert db.document("sessions/s1/steps/define/messages/u1").get().update_time == before


def test_history_is_served_from_memory_while_the_step_revision_matches(store, db):
    claim = begin_new(store)
    claim.finish("Echo", "complete", "stop", None, "m")
    store.reads = 0
    conversation = store.open("s1", "define", "alice")
    assert [m.id for m in conversation.messages] == ["u1", "u1~reply"]
    assert conversation.messages[1].text == "Echo"
    assert store.reads == 1  # the step document only


def test_a_write_by_another_instance_invalidates_the_cached_history(store, db):
    begin_new(store).finish("Echo", "complete", "stop", None, "m")
    store.open("s1", "define", "alice")
    other = FirestoreStore(db)
    begin_new(other, "Again", "u2", now=NOW + 10).finish("Echo 2", "complete", "stop", None, "m")
    conversation = store.open("s1", "define", "alice")
    assert [m.text for m in conversation.messages] == ["Hi", "Echo", "Again", "Echo 2"]


def test_reads_per_turn_do_not_grow_with_history(store):
    for i in range(30):
        begin_new(store, f"m{i}", f"u{i}", now=NOW + i).finish("ok", "complete", "stop", None, "m")
    store.reads = 0
    store.open("s1", "define", "alice")
    assert store.reads == 1


def test_another_user_gets_not_found(store):
    begin_new(store)
    with pytest.raises(NotFound):
        store.open("s1", "define", "mallory")
    with pytest.raises(NotFound):
        FirestoreStore(store.db).open("s1", "define", "mallory")


def test_a_claim_taken_over_by_a_newer_generation_is_lost(store, db):
    claim = begin_new(store)
    claim.checkpoint("partial")
    conversation = store.open("s1", "define", "alice")
    seen = conversation.get("u1~reply")
    newer = store.begin(
        conversation, UserMessage("u1", "Hi"), "u1~reply", "regenerate", NOW + 1, seen
    )
    assert newer is not None
    with pytest.raises(LostClaim):
        claim.checkpoint("more")
    with pytest.raises(LostClaim):
        claim.finish("done", "complete", "stop", None, "m")
    newer.finish("new", "complete", "stop", None, "m")
    reply = db.document("sessions/s1/steps/define/messages/u1~reply").get().to_dict()
    assert reply["parts"] == [{"type": "text", "text": "new"}]


def test_two_regenerates_from_the_same_state_claim_once(store):
    begin_new(store).finish("Echo", "complete", "stop", None, "m")
    conversation = store.open("s1", "define", "alice")
    seen = conversation.get("u1~reply")
    user = UserMessage("u1", "Hi")
    first = store.begin(conversation, user, "u1~reply", "regenerate", NOW + 1, seen)
    second = store.begin(conversation, user, "u1~reply", "regenerate", NOW + 2, seen)
    assert first is not None
    assert second is None


def test_the_rate_limit_counts_per_user_per_minute(store):
    assert [store.take_turn_token("alice", 2, NOW) for _ in range(2)] == [None, None]
    assert store.take_turn_token("alice", 2, NOW + 1) == 59
    assert store.take_turn_token("bob", 2, NOW + 1) is None
    assert store.take_turn_token("alice", 2, NOW + 61) is None


def test_a_retried_write_that_had_landed_is_not_mistaken_for_a_takeover(store, db):
    """The client retries a commit that timed out: the retry then fails its precondition on
    our own write. The claim is in that state when its update time is older than the doc's."""
    claim = begin_new(store)
    stale = claim.update_time
    claim.checkpoint("partial")
    claim.update_time = stale
    claim.checkpoint("more")  # no LostClaim: the document is still this generation's
    claim.finish("done", "complete", "stop", None, "m")
    reply = db.document("sessions/s1/steps/define/messages/u1~reply").get().to_dict()
    assert (reply["parts"], reply["status"]) == ([{"type": "text", "text": "done"}], "complete")
