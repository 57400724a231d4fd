"""The store's contract (`chat/ports.py`: `Conversations` and `ReplyStore`), one suite run against
every backend: the in-memory store the unit tests drive the core with, and the Firestore
adapter on the emulator. Where the fake keeps a rule the adapter does not, or the other way,
a test here fails for one backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes import MemoryStore
from workshop_chat.chat.domain import Content, Ending, Message, UserMessage
from workshop_chat.chat.ports import Claim, Conversations, Moved, ReplyStore, ReplyWrite
from workshop_chat.chat.ports import WriteOutcome as W

STEP = "define"


@dataclass
class Backend:
    """One store as two processes see it, and how time passes for its leases."""

    store: Conversations
    writer: ReplyStore
    other: Conversations  # the same data through another process's copies
    other_writer: ReplyStore
    advance: Callable[[float], None]
    now: Callable[[], float]

    def new(self, text: str = "Hi", mid: str = "u1", uid: str = "alice") -> Any:
        conversation = self.store.open("s1", STEP, uid)
        return self.store.begin(
            conversation, UserMessage(mid, text), f"{mid}~reply", "new", self.now(), None
        )

    def finish(self, claim: Claim, text: str = "Echo") -> W:
        (outcome,) = self.writer.write_replies(
            [ReplyWrite(claim, Content(text), Ending("complete", "stop"))]
        )
        return outcome

    def reply(self, reply_id: str = "u1~reply") -> Message:
        found = self.store.reply("s1", STEP, reply_id)
        assert found is not None
        return found


LEASE = 0.5


@pytest.fixture(params=["memory", "firestore"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryStore(lease_seconds=LEASE)

        def advance(seconds: float) -> None:
            memory.now += seconds

        yield Backend(memory, memory, memory, memory, advance, lambda: memory.now)
        return
    db = request.getfixturevalue("db")
    from workshop_chat.firestore.access import FirestoreAccess
    from workshop_chat.firestore.conversations import FirestoreStore
    from workshop_chat.firestore.replies import ReplyWriter

    one, two = FirestoreAccess(db, lease_seconds=LEASE), FirestoreAccess(db, lease_seconds=LEASE)
    yield Backend(
        FirestoreStore(one),
        ReplyWriter(one),
        FirestoreStore(two),
        ReplyWriter(two),
        time.sleep,
        time.time,
    )


def test_a_new_turn_stores_the_message_and_claims_its_reply(backend: Backend) -> None:
    claim = backend.new("Hello")
    assert claim is not None and not isinstance(claim, Moved)
    seen = backend.store.open("s1", STEP, "alice")
    assert (seen.session_exists, seen.role) == (True, "owner")
    assert [(m.id, m.role, m.text, m.status) for m in seen.messages] == [
        ("u1", "user", "Hello", "complete"),
        ("u1~reply", "assistant", "", "streaming"),
    ]
    assert claim.created_at > seen.messages[0].created_at


def test_a_twin_new_turn_loses_and_changes_nothing(backend: Backend) -> None:
    seen = backend.other.open("s1", STEP, "alice")  # before the winner's write
    assert backend.finish(backend.new()) is W.WROTE
    twin = backend.other.begin(seen, UserMessage("u1", "Hi"), "u1~reply", "new", 0.0, None)
    assert twin is None
    assert backend.reply().text == "Echo"


def test_someone_elses_session_has_no_role_and_shows_nothing(backend: Backend) -> None:
    backend.finish(backend.new())
    for store in (backend.store, backend.other):
        seen = store.open("s1", STEP, "mallory")
        assert (seen.session_exists, seen.role, seen.messages) == (True, None, [])


def test_a_claim_on_a_moved_session_hands_back_what_is_stored(backend: Backend) -> None:
    backend.finish(backend.new())
    seen = backend.store.open("s1", STEP, "alice")
    elsewhere = backend.other.open("s1", STEP, "alice")
    t = backend.now()
    late = backend.other.begin(
        elsewhere, UserMessage("u2", "Again"), "u2~reply", "new", t + 1, None
    )
    assert late is not None and not isinstance(late, Moved)
    moved = backend.store.begin(seen, UserMessage("u3", "Third"), "u3~reply", "new", t + 2, None)
    assert isinstance(moved, Moved)
    assert [m.id for m in moved.conversation.messages] == ["u1", "u1~reply", "u2", "u2~reply"]
    third = UserMessage("u3", "Third")
    again = backend.store.begin(moved.conversation, third, "u3~reply", "new", t + 2, None)
    assert again is not None and not isinstance(again, Moved)


def test_two_regenerates_from_the_same_state_claim_once(backend: Backend) -> None:
    backend.finish(backend.new())
    seen = backend.store.open("s1", STEP, "alice")
    reply, user = seen.get("u1~reply"), UserMessage("u1", "Hi")
    first = backend.store.begin(seen, user, "u1~reply", "regenerate", 5.0, reply)
    second = backend.store.begin(seen, user, "u1~reply", "regenerate", 6.0, reply)
    assert first is not None and not isinstance(first, Moved)
    assert second is None


def test_writes_of_a_generation_taken_over_are_lost(backend: Backend) -> None:
    claim = backend.new()
    assert backend.writer.write_replies([ReplyWrite(claim, Content("partial"))]) == [W.WROTE]
    seen = backend.store.open("s1", STEP, "alice")
    newer = backend.store.begin(
        seen, UserMessage("u1", "Hi"), "u1~reply", "regenerate", 5.0, seen.get("u1~reply")
    )
    assert newer is not None and not isinstance(newer, Moved)
    assert backend.writer.write_replies([ReplyWrite(claim, Content("more"))]) == [W.LOST]
    assert backend.finish(claim, "old") is W.LOST
    assert backend.finish(newer, "new") is W.WROTE
    assert backend.reply().text == "new"


def test_each_write_of_a_batch_holds_or_fails_alone(backend: Backend) -> None:
    claims = [backend.new(f"t{i}", f"u{i}") for i in range(4)]
    seen = backend.store.open("s1", STEP, "alice")
    # The newest reply: regenerating an earlier one would cut the turns after it.
    taken = backend.store.begin(
        seen, UserMessage("u3", "t3"), "u3~reply", "regenerate", backend.now(), seen.get("u3~reply")
    )
    assert taken is not None
    outcomes = backend.writer.write_replies(
        [ReplyWrite(c, Content(f"text {i}")) for i, c in enumerate(claims)]
    )
    assert outcomes == [W.WROTE, W.WROTE, W.WROTE, W.LOST]
    assert backend.reply("u2~reply").text == "text 2"


def test_a_stop_requested_elsewhere_reaches_the_next_checkpoint(backend: Backend) -> None:
    claim = backend.new()
    assert backend.other.request_stop("s1", STEP, "u1~reply") is True
    assert backend.writer.write_replies([ReplyWrite(claim, Content("so far"))]) == [W.STOP]
    assert backend.other.request_stop("s1", STEP, "nothing~reply") is False


def test_a_lapsed_reply_is_taken_over_only_if_nobody_wrote_it_since(backend: Backend) -> None:
    claim = backend.new()
    assert [m.id for m in backend.store.pending("s1", STEP)] == ["u1~reply"]
    backend.advance(LEASE + 0.3)
    seen = backend.reply()
    assert seen.lapsed
    assert backend.writer.write_replies([ReplyWrite(claim, None)]) == [W.WROTE]  # only slow
    conversation = backend.other.open("s1", STEP, "alice")
    user = UserMessage("u1", "Hi")
    assert backend.other.begin(conversation, user, "u1~reply", "resume", 9.0, seen) is None
    backend.advance(LEASE + 0.3)
    seen = backend.reply()
    taken = backend.other.begin(conversation, user, "u1~reply", "resume", 9.0, seen)
    assert taken is not None and not isinstance(taken, Moved)
    assert backend.writer.write_replies([ReplyWrite(claim, Content("late"))]) == [W.LOST]


def test_the_rate_limit_state_comes_with_the_look_and_the_claim_counts_it(
    backend: Backend,
) -> None:
    seen = backend.store.open("s1", STEP, "alice", quota=2)
    assert seen.quota is not None and seen.quota.count == 0
    now = backend.now()
    backend.store.begin(seen, UserMessage("u1", "Hi"), "u1~reply", "new", now, None)
    counted = backend.other.open("s2", STEP, "alice", quota=2).quota
    assert counted is not None and counted.count == 1
    assert counted.wait(now + 1) is None
    assert counted.after_turn(now + 1).wait(now + 2) == 58
