"""Firestore adapter on the emulator: claims, the precondition-validated cache, batched writes."""

from __future__ import annotations

import pytest

from workshop_chat.checkpoints import ReplyWrite
from workshop_chat.domain import Ending, NotFound, UserMessage
from workshop_chat.firestore_access import FirestoreAccess
from workshop_chat.rate_limit import RateLimiter
from workshop_chat.reply_writes import ReplyWriter
from workshop_chat.store import FirestoreStore

NOW = 1_800_000_000.0
REPLY = "sessions/s1/steps/define/messages/u1~reply"


@pytest.fixture
def store(db) -> FirestoreStore:
    return FirestoreStore(FirestoreAccess(db))


def write(store: FirestoreStore, writes: list[ReplyWrite]) -> list[str]:
    """What the checkpointer of `store`'s process writes (they share `access`)."""
    return ReplyWriter(store.access).write_replies(writes)


def begin_new(
    store: FirestoreStore, text: str = "Hi", mid: str = "u1", uid: str = "alice", now: float = NOW
):
    conversation = store.open("s1", "define", uid)
    return store.begin(conversation, UserMessage(mid, text), f"{mid}~reply", "new", now, None)


def finish(store: FirestoreStore, claim, text: str = "Echo") -> str:
    (outcome,) = write(store, [ReplyWrite(claim, text, Ending("complete", "stop"))])
    return outcome


def test_a_new_turn_creates_session_step_user_message_and_claimed_reply(store, db):
    claim = begin_new(store)
    assert claim is not None
    session = db.document("sessions/s1").get().to_dict()
    assert session["ownerUid"] == "alice"
    reply = db.document(REPLY).get().to_dict()
    assert (reply["status"], reply["replyTo"], reply["parts"]) == ("streaming", "u1", [])
    assert claim.created_at == NOW + 0.001


def test_a_twin_new_turn_loses_the_race_and_writes_nothing(store, db):
    assert begin_new(store) is not None
    before = db.document("sessions/s1/steps/define/messages/u1").get().update_time
    twin = FirestoreStore(FirestoreAccess(db))
    conversation = twin.open("s1", "define", "alice")
    conversation.messages = []  # what a racing request saw before the winner's write
    twin_user = UserMessage("u1", "Hi")
    assert twin.begin(conversation, twin_user, "u1~reply", "new", NOW + 5, None) is None
    assert db.document("sessions/s1/steps/define/messages/u1").get().update_time == before


def test_a_warm_turn_reads_nothing_and_a_stale_copy_is_caught_by_the_precondition(store, db):
    assert finish(store, begin_new(store)) == "wrote"
    store.access.reads = 0
    conversation = store.open("s1", "define", "alice")
    assert [m.text for m in conversation.messages] == ["Hi", "Echo"]
    assert store.access.reads == 0
    # Another instance writes the step: our next claim fails its precondition, writes
    # nothing, and the history is read again.
    other = FirestoreStore(FirestoreAccess(db))
    assert finish(other, begin_new(other, "Again", "u2", now=NOW + 10), "Echo 2") == "wrote"
    stale = store.begin(conversation, UserMessage("u3", "Third"), "u3~reply", "new", NOW + 20, None)
    assert stale is None
    assert not db.document("sessions/s1/steps/define/messages/u3").get().exists
    fresh = store.open("s1", "define", "alice")
    assert [m.text for m in fresh.messages] == ["Hi", "Echo", "Again", "Echo 2"]


def test_reads_per_turn_do_not_grow_with_history(store):
    for i in range(30):
        assert finish(store, begin_new(store, f"m{i}", f"u{i}", now=NOW + i), "ok") == "wrote"
    store.access.reads = 0
    store.open("s1", "define", "alice")
    assert store.access.reads == 0


def test_another_user_gets_not_found(store):
    begin_new(store)
    with pytest.raises(NotFound):
        store.open("s1", "define", "mallory")
    with pytest.raises(NotFound):
        FirestoreStore(FirestoreAccess(store.access.db)).open("s1", "define", "mallory")


def test_a_claim_taken_over_by_a_newer_generation_is_lost(store, db):
    claim = begin_new(store)
    assert write(store, [ReplyWrite(claim, "partial")]) == ["wrote"]
    conversation = store.open("s1", "define", "alice", fresh=True)
    seen = conversation.get("u1~reply")
    newer = store.begin(
        conversation, UserMessage("u1", "Hi"), "u1~reply", "regenerate", NOW + 1, seen
    )
    assert newer is not None
    assert write(store, [ReplyWrite(claim, "more")]) == ["lost"]
    assert finish(store, claim, "done") == "lost"
    assert finish(store, newer, "new") == "wrote"
    assert db.document(REPLY).get().to_dict()["parts"] == [{"type": "text", "text": "new"}]


def test_two_regenerates_from_the_same_state_claim_once(store):
    finish(store, begin_new(store))
    conversation = store.open("s1", "define", "alice", fresh=True)
    seen = conversation.get("u1~reply")
    user = UserMessage("u1", "Hi")
    first = store.begin(conversation, user, "u1~reply", "regenerate", NOW + 1, seen)
    second = store.begin(conversation, user, "u1~reply", "regenerate", NOW + 2, seen)
    assert first is not None
    assert second is None


def test_many_replies_checkpoint_in_one_batch_each_with_its_own_precondition(store, db):
    claims = [begin_new(store, f"t{i}", f"u{i}", now=NOW + i) for i in range(5)]
    stale = claims[2]
    stale.update_time = claims[0].update_time  # as if another write had landed meanwhile
    db.document("sessions/s1/steps/define/messages/u2~reply").update({"generation": "other"})
    outcomes = write(store, [ReplyWrite(c, f"text {i}") for i, c in enumerate(claims)])
    assert outcomes == ["wrote", "wrote", "lost", "wrote", "wrote"]
    texts = [
        db.document(f"sessions/s1/steps/define/messages/u{i}~reply").get().to_dict()["parts"]
        for i in range(5)
    ]
    assert texts[2] == [] and texts[4] == [{"type": "text", "text": "text 4"}]


def test_a_lease_renewal_writes_no_text_and_a_lapsed_lease_reads_as_lapsed(db):
    store = FirestoreStore(FirestoreAccess(db, lease_seconds=1.0))
    claim = begin_new(store)
    assert write(store, [ReplyWrite(claim, "some")]) == ["wrote"]
    assert write(store, [ReplyWrite(claim, None)]) == ["wrote"]
    assert db.document(REPLY).get().to_dict()["parts"] == [{"type": "text", "text": "some"}]
    assert not store.reply("s1", "define", "u1~reply").lapsed
    import time

    time.sleep(1.2)
    assert store.reply("s1", "define", "u1~reply").lapsed


def test_a_lapsed_reply_is_taken_over_only_if_nobody_wrote_it_since(db):
    store = FirestoreStore(FirestoreAccess(db, lease_seconds=0.2))
    claim = begin_new(store)
    import time

    time.sleep(0.3)
    conversation = store.open("s1", "define", "alice", fresh=True)
    seen = store.reply("s1", "define", "u1~reply")
    assert seen.lapsed
    assert write(store, [ReplyWrite(claim, None)]) == ["wrote"]  # it was only slow
    user = UserMessage("u1", "Hi")
    assert store.begin(conversation, user, "u1~reply", "resume", NOW + 1, seen) is None
    time.sleep(0.3)
    seen = store.reply("s1", "define", "u1~reply")
    taken = store.begin(conversation, user, "u1~reply", "resume", NOW + 1, seen)
    assert taken is not None and taken.generation != claim.generation


def test_the_rate_limit_counts_per_user_per_minute(store):
    limiter = RateLimiter(store.access)
    assert [limiter.take_turn_token("alice", 2, NOW) for _ in range(2)] == [None, None]
    assert limiter.take_turn_token("alice", 2, NOW + 1) == 59
    assert limiter.take_turn_token("bob", 2, NOW + 1) is None
    assert limiter.take_turn_token("alice", 2, NOW + 61) is None


def test_a_retried_write_that_had_landed_is_not_mistaken_for_a_takeover(store, db):
    """The client retries a commit that timed out: the retry then fails its precondition on
    our own write. The generation tells that apart from a takeover."""
    claim = begin_new(store)
    stale = claim.update_time
    assert write(store, [ReplyWrite(claim, "partial")]) == ["wrote"]
    claim.update_time = stale
    assert write(store, [ReplyWrite(claim, "more")]) == ["unstored"]  # ours: try again
    assert finish(store, claim, "done") == "wrote"
    reply = db.document(REPLY).get().to_dict()
    assert (reply["parts"], reply["status"]) == ([{"type": "text", "text": "done"}], "complete")
