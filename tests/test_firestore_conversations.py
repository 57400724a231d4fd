"""Firestore adapter on the emulator: claims, copies validated in one look, batched writes."""

from __future__ import annotations

import time

import pytest

from workshop_chat.chat.checkpoints import ReplyWrite
from workshop_chat.chat.domain import RECENT, Content, Ending, Quota, UserMessage
from workshop_chat.chat.ports import Moved, WriteOutcome
from workshop_chat.firestore.access import FirestoreAccess
from workshop_chat.firestore.conversations import FirestoreStore
from workshop_chat.firestore.replies import ReplyWriter

NOW = 1_800_000_000.0
WROTE, LOST, UNSTORED = WriteOutcome.WROTE, WriteOutcome.LOST, WriteOutcome.UNSTORED
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
    (outcome,) = write(store, [ReplyWrite(claim, Content(text), Ending("complete", "stop"))])
    return outcome


def test_a_new_turn_creates_session_step_user_message_and_claimed_reply(store, db):
    claim = begin_new(store)
    assert claim is not None
    session = db.document("sessions/s1").get().to_dict()
    assert session["ownerUid"] == "alice" and len(session["incarnation"]) == 32
    assert session["steps"]["define"] | {"startedAt": None, "updatedAt": None} == {
        "seq": 2,
        "messages": 2,
        "cuts": 0,
        "startedAt": None,
        "updatedAt": None,
        "recent": "1 u1 2 u1~reply",
    }
    assert db.document("sessions/s1/steps/define").get().exists
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


def test_a_warm_look_reads_the_head_and_only_what_changed(store, db):
    assert finish(store, begin_new(store)) is WROTE
    store.access.reads = store.access.full_reads = 0
    conversation = store.open("s1", "define", "alice")
    assert [m.text for m in conversation.messages] == ["Hi", "Echo"]
    # The head alone: the step has not moved since this process's copy.
    assert (store.access.reads, store.access.full_reads) == (1, 0)
    # Another instance takes a turn: this one's next look reads just those two messages.
    other = FirestoreStore(FirestoreAccess(db))
    assert finish(other, begin_new(other, "Again", "u2", now=NOW + 10), "Echo 2") is WROTE
    store.access.reads = 0
    fresh = store.open("s1", "define", "alice")
    assert [m.text for m in fresh.messages] == ["Hi", "Echo", "Again", "Echo 2"]
    assert (store.access.reads, store.access.full_reads) == (3, 0)  # the head, then by id


def test_a_look_told_what_the_client_holds_reads_what_moved_beside_the_head(store, db):
    assert finish(store, begin_new(store)) is WROTE
    store.open("s1", "define", "alice")
    other = FirestoreStore(FirestoreAccess(db))
    assert finish(other, begin_new(other, "Again", "u2", now=NOW + 10), "Echo 2") is WROTE
    round_trips: list[int] = []
    get_all = store.access.get_all

    def counted(refs):
        round_trips.append(len(refs))
        return get_all(refs)

    store.access.get_all = counted  # type: ignore[method-assign]
    store.access.reads = 0
    # A stranger's hint is read for nothing.
    stranger = store.open("s1", "define", "eve", seen=["u2", "u2~reply"])
    assert (stranger.role, stranger.messages, round_trips, store.access.reads) == (None, [], [1], 1)
    round_trips.clear()
    store.access.reads = 0
    # A client that saw the other instance's turn: one round trip, the head and those two.
    # What it lists that did not move (or never existed) is read, but never taken.
    seen = ["u1", "u1~reply", "forged", "u2", "u2~reply"]
    fresh = store.open("s1", "define", "alice", seen=seen)
    assert [m.text for m in fresh.messages] == ["Hi", "Echo", "Again", "Echo 2"]
    assert (round_trips, store.access.reads, store.access.full_reads) == ([4], 4, 0)
    # A client that knew less: what it missed is read by id after the head, as without a hint.
    assert finish(other, begin_new(other, "Three", "u3", now=NOW + 20), "Echo 3") is WROTE
    round_trips.clear()
    later = store.open("s1", "define", "alice", seen=["u2~reply", "u3"])
    assert [m.text for m in later.messages][-2:] == ["Three", "Echo 3"]
    assert round_trips == [2, 1]
    # More turns elsewhere than the head remembers (RECENT numbers). The client's last RECENT
    # come with the head; only the two older ones are asked for by number, none read twice.
    turns = range(4, 5 + RECENT // 2)
    for i in turns:
        claim = begin_new(other, f"T{i}", f"u{i}", now=NOW + 10 * i)
        assert finish(other, claim, f"E{i}") is WROTE
    round_trips.clear()
    store.access.reads = 0
    ids = [m for i in turns for m in (f"u{i}", f"u{i}~reply")]
    gap = store.open("s1", "define", "alice", seen=ids[-RECENT:])
    assert [m.text for m in gap.messages][-len(ids) :] == [
        t for i in turns for t in (f"T{i}", f"E{i}")
    ]
    assert (round_trips, store.access.reads) == ([1 + RECENT], 3 + RECENT)
    assert store.access.full_reads == 0


def test_a_look_beyond_what_the_head_remembers_sees_the_step_as_the_head_was_read(store, db):
    assert finish(store, begin_new(store, "T0", "u0"), "E0") is WROTE
    store.open("s1", "define", "alice")
    other = FirestoreStore(FirestoreAccess(db))
    turns = range(1, 2 + RECENT // 2)  # u1 is numbered below what the head then remembers
    for i in turns:
        assert finish(other, begin_new(other, f"T{i}", f"u{i}", now=NOW + i), f"E{i}") is WROTE
    get_all = store.access.get_all

    def raced(refs):
        """The head is read; before the rest of the look, another instance regenerates u1's
        reply, which takes a new number and deletes every message after it."""
        found = get_all(refs)
        store.access.get_all = get_all  # type: ignore[method-assign]
        seen = other.open("s1", "define", "alice")
        regen = other.begin(
            seen, UserMessage("u1", "T1"), "u1~reply", "regenerate", NOW + 99, seen.get("u1~reply")
        )
        assert regen is not None and not isinstance(regen, Moved)
        return found

    store.access.get_all = raced  # type: ignore[method-assign]
    ids = [m for i in turns for m in (f"u{i}", f"u{i}~reply")]
    look = store.open("s1", "define", "alice", seen=ids[-RECENT:])
    # One moment of the step: the one the head was read at, the reply to u1 in it.
    assert [m.id for m in look.messages] == ["u0", "u0~reply", *ids]
    assert store.access.full_reads == 0


def test_a_claim_on_a_moved_session_writes_nothing_and_hands_back_what_is_stored(store, db):
    assert finish(store, begin_new(store)) is WROTE
    conversation = store.open("s1", "define", "alice")
    other = FirestoreStore(FirestoreAccess(db))
    assert finish(other, begin_new(other, "Again", "u2", now=NOW + 10), "Echo 2") is WROTE
    moved = store.begin(conversation, UserMessage("u3", "Third"), "u3~reply", "new", NOW + 20, None)
    assert isinstance(moved, Moved)
    assert [m.id for m in moved.conversation.messages] == ["u1", "u1~reply", "u2", "u2~reply"]
    assert not db.document("sessions/s1/steps/define/messages/u3").get().exists
    again = store.begin(
        moved.conversation, UserMessage("u3", "Third"), "u3~reply", "new", NOW + 20, None
    )
    assert again is not None and not isinstance(again, Moved)


def test_a_copy_follows_an_edit_made_elsewhere_without_reading_the_whole_step(store, db):
    for i in range(3):
        assert finish(store, begin_new(store, f"m{i}", f"u{i}", now=NOW + i), f"r{i}") is WROTE
    assert len(store.open("s1", "define", "alice").messages) == 6
    other = FirestoreStore(FirestoreAccess(db))
    seen = other.open("s1", "define", "alice")
    edited = UserMessage("u1", "m1 edited")
    edit = other.begin(seen, edited, "u1~reply", "edit", NOW + 9, seen.get("u1~reply"))
    assert edit is not None and edit.removed == ("u2", "u2~reply")
    store.access.full_reads = 0
    after = store.open("s1", "define", "alice")
    assert [(m.id, m.text) for m in after.messages] == [
        ("u0", "m0"),
        ("u0~reply", "r0"),
        ("u1", "m1 edited"),
        ("u1~reply", ""),
    ]
    assert store.access.full_reads == 0
    assert db.document("sessions/s1").get().to_dict()["steps"]["define"]["messages"] == 4


def test_a_deleted_and_recreated_session_is_never_seen_through_an_old_copy(store, db):
    assert finish(store, begin_new(store)) is WROTE
    store.open("s1", "define", "alice")
    for doc in db.collection("sessions/s1/steps/define/messages").stream():
        doc.reference.delete()
    db.document("sessions/s1/steps/define").delete()
    db.document("sessions/s1").delete()
    other = FirestoreStore(FirestoreAccess(db))
    assert finish(other, begin_new(other, "New life", "u9", uid="bob"), "ok") is WROTE
    old_owner = store.open("s1", "define", "alice")
    assert (old_owner.role, old_owner.messages) == (None, [])
    assert [m.text for m in store.open("s1", "define", "bob").messages] == ["New life", "ok"]


def test_reads_per_turn_do_not_grow_with_history(store):
    for i in range(30):
        assert finish(store, begin_new(store, f"m{i}", f"u{i}", now=NOW + i), "ok") is WROTE
    store.access.reads = 0
    store.open("s1", "define", "alice")
    assert store.access.reads == 1


def test_another_user_gets_no_role_and_nothing_of_the_step(store):
    finish(store, begin_new(store))
    for instance in (store, FirestoreStore(FirestoreAccess(store.access.db))):
        reads = instance.access.reads
        seen = instance.open("s1", "define", "mallory")
        assert (seen.session_exists, seen.role, seen.messages) == (True, None, [])
        assert instance.access.reads - reads == 1  # the head: nothing of the step was read


def test_a_claim_taken_over_by_a_newer_generation_is_lost(store, db):
    claim = begin_new(store)
    assert write(store, [ReplyWrite(claim, Content("partial"))]) == [WROTE]
    conversation = store.open("s1", "define", "alice")
    seen = conversation.get("u1~reply")
    newer = store.begin(
        conversation, UserMessage("u1", "Hi"), "u1~reply", "regenerate", NOW + 1, seen
    )
    assert newer is not None
    assert write(store, [ReplyWrite(claim, Content("more"))]) == [LOST]
    assert finish(store, claim, "done") is LOST
    assert finish(store, newer, "new") is WROTE
    assert db.document(REPLY).get().to_dict()["parts"] == [{"type": "text", "text": "new"}]


def test_two_regenerates_from_the_same_state_claim_once(store):
    finish(store, begin_new(store))
    conversation = store.open("s1", "define", "alice")
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
    outcomes = write(store, [ReplyWrite(c, Content(f"text {i}")) for i, c in enumerate(claims)])
    assert outcomes == [WROTE, WROTE, LOST, WROTE, WROTE]
    texts = [
        db.document(f"sessions/s1/steps/define/messages/u{i}~reply").get().to_dict()["parts"]
        for i in range(5)
    ]
    assert texts[2] == [] and texts[4] == [{"type": "text", "text": "text 4"}]


def test_a_lease_renewal_writes_no_text_and_a_lapsed_lease_reads_as_lapsed(db):
    store = FirestoreStore(FirestoreAccess(db, lease_seconds=1.0))
    claim = begin_new(store)
    assert write(store, [ReplyWrite(claim, Content("some"))]) == [WROTE]
    assert write(store, [ReplyWrite(claim, None)]) == [WROTE]
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
    conversation = store.open("s1", "define", "alice")
    seen = store.reply("s1", "define", "u1~reply")
    assert seen.lapsed
    assert write(store, [ReplyWrite(claim, None)]) == [WROTE]  # it was only slow
    user = UserMessage("u1", "Hi")
    assert store.begin(conversation, user, "u1~reply", "resume", NOW + 1, seen) is None
    time.sleep(0.3)
    seen = store.reply("s1", "define", "u1~reply")
    taken = store.begin(conversation, user, "u1~reply", "resume", NOW + 1, seen)
    assert taken is not None and taken.generation != claim.generation


def test_the_rate_limit_state_comes_with_the_look_and_is_counted_by_the_claim(store, db):
    assert store.open("s1", "define", "alice", quota=2).quota == Quota(per_minute=2)
    conversation = store.open("s1", "define", "alice", quota=2)
    store.begin(conversation, UserMessage("u1", "Hi"), "u1~reply", "new", NOW, None)
    quota = store.open("s1", "define", "alice", quota=2).quota
    assert (quota.window_start, quota.count) == (NOW, 1)
    assert quota.wait(NOW + 1) is None and quota.after_turn(NOW + 1).wait(NOW + 2) == 58
    assert quota.after_turn(NOW + 1).wait(NOW + 61) is None
    # A count made elsewhere since the look fails the claim: nothing written, look again.
    other = FirestoreStore(FirestoreAccess(db))
    seen = other.open("s2", "define", "alice", quota=2)
    again = store.open("s3", "define", "alice", quota=2)
    store.begin(again, UserMessage("u3", "Hi"), "u3~reply", "new", NOW + 2, None)
    moved = other.begin(seen, UserMessage("u2", "Hi"), "u2~reply", "new", NOW + 3, None)
    assert isinstance(moved, Moved) and moved.conversation.quota.count == 2
    assert not db.document("sessions/s2").get().exists


def test_a_retried_write_that_had_landed_is_not_mistaken_for_a_takeover(store, db):
    """The client retries a commit that timed out: the retry then fails its precondition on
    our own write. The generation tells that apart from a takeover."""
    claim = begin_new(store)
    stale = claim.update_time
    assert write(store, [ReplyWrite(claim, Content("partial"))]) == [WROTE]
    claim.update_time = stale
    assert write(store, [ReplyWrite(claim, Content("more"))]) == [UNSTORED]  # ours: try again
    assert finish(store, claim, "done") is WROTE
    reply = db.document(REPLY).get().to_dict()
    assert (reply["parts"], reply["status"]) == ([{"type": "text", "text": "done"}], "complete")


def test_a_session_stored_before_heads_counted_steps_keeps_its_whole_history(store, db):
    """Sessions written by earlier versions: no incarnation, no step counters, no numbers."""
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) - timedelta(hours=1)
    db.document("sessions/s1").set({"ownerUid": "alice", "createdAt": start, "updatedAt": start})
    for step in ("define", "ideate"):
        db.document(f"sessions/s1/steps/{step}").set({"createdAt": start, "revision": "r"})
        for n, (mid, role) in enumerate((("o1", "user"), ("o1~reply", "assistant"))):
            db.document(f"sessions/s1/steps/{step}/messages/{mid}").set(
                {
                    "id": mid,
                    "role": role,
                    "parts": [{"type": "text", "text": f"old {step} {n}"}],
                    "status": "complete",
                    "createdAt": start + timedelta(seconds=n),
                    "updatedAt": start + timedelta(seconds=n),
                }
            )
    assert finish(store, begin_new(store, "new", "n1"), "fresh") is WROTE
    for _ in range(2):  # the worker that wrote, and its next look
        texts = [m.text for m in store.open("s1", "define", "alice").messages]
        assert texts == ["old define 0", "old define 1", "new", "fresh"]
    assert [m.text for m in store.open("s1", "ideate", "alice").messages] == [
        "old ideate 0",
        "old ideate 1",
    ]
    from workshop_chat.firestore.sessions import SessionStore

    overview = SessionStore(store.access).view("s1").steps
    assert sorted((s.step_id, s.message_count) for s in overview) == [
        ("define", 4),
        ("ideate", 2),
    ]


def test_processes_whose_summary_timers_fire_together_read_the_messages_once(store, db):
    """Every worker that served a step arms a timer, and they all wait for the same quiet
    moment: the one whose lease holds reads the messages; the others read two documents."""
    from workshop_chat.firestore.outcomes import OutcomeStore

    earlier = time.time() - 60  # quiet for a minute
    for i in range(3):
        claim = begin_new(store, f"m{i}", f"u{i}", now=earlier + i)
        assert finish(store, claim, f"r{i}") is WROTE
    first, second = OutcomeStore(FirestoreAccess(db)), OutcomeStore(FirestoreAccess(db))
    real = second.access.get_all

    def then_the_first(refs):
        found = real(refs)
        if any(ref.path == "sessions/s1/steps/define" for ref in refs):
            # Both have read the step document: the first takes the lease and the messages.
            job = first.summary_job("s1", "define", 10.0, 600.0)
            assert job is not None and not isinstance(job, float)
            assert [m.text for m in job.messages] == ["m0", "r0", "m1", "r1", "m2", "r2"]
        return found

    second.access.get_all = then_the_first
    assert second.summary_job("s1", "define", 10.0, 600.0) == 10.0  # look again later
    assert (second.access.reads, second.access.full_reads) == (2, 0)  # the head, the step
