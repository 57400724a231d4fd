"""An in-memory store and a scripted model with the adapters' contracts (`chat/ports.py`).

They keep the rules the real adapters keep (create preconditions, generations, last-write
preconditions, leases), so the lifecycle can be driven through every race without processes;
`tests/test_contract.py` runs one suite against this store and the Firestore adapter alike.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from workshop_chat.chat import aio
from workshop_chat.chat.board import MAX_BOARD_ITEMS, BoardError, BoardItem, Change
from workshop_chat.chat.budget import Spend, tokens_of, utc_day
from workshop_chat.chat.domain import UNSETTLED, Content, Message, Mode, Outcome, Quota, UserMessage
from workshop_chat.chat.errors import NotFound, StoreUnavailable
from workshop_chat.chat.ports import ModelDone, ModelText, Moved, ReplyWrite, Role, WriteOutcome


@dataclass
class Conversation:
    session_id: str
    step_id: str
    uid: str
    session_exists: bool
    messages: list[Message] = field(default_factory=list)
    head_version: int = 0  # the session's version as read: a new turn's claim requires it
    quota: Quota | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    spend: Spend | None = None
    role: Role | None = None
    deleting: bool = False
    board_version: str = ""  # the memory store keeps no board of its own
    names: dict[str, str] = field(default_factory=dict)  # no team: a session of one
    session_turns: Quota = field(default_factory=Quota)

    def get(self, message_id: str) -> Message | None:
        return next((m for m in self.messages if m.id == message_id), None)


@dataclass
class Claim:
    key: tuple[str, str]
    reply_id: str
    update_time: int
    created_at: float
    generation: str
    removed: tuple[str, ...] = ()  # messages an edit or regenerate deleted
    epoch: str = ""  # the memory store keeps one content epoch per reply id
    uid: str = ""
    charged: bool = False


class MemoryStore:
    """One step's messages by id; `version` plays Firestore's update time, `clock` the server's."""

    def __init__(
        self, lease_seconds: float = 8.0, user_daily_tokens: int = 0, daily_tokens: int = 0
    ) -> None:
        self.lease_seconds = lease_seconds
        self.limits = (user_daily_tokens, daily_tokens)
        self.spent: dict[tuple[str, str], int] = {}  # (day, uid or "") -> tokens
        self.now = 1_800_000_000.0
        self.messages: dict[tuple[str, str], dict[str, Message]] = {}
        self.versions: dict[tuple[str, str, str], tuple[int, float]] = {}
        self.owners: dict[str, str] = {}
        self.heads: dict[str, int] = {}  # each session's version
        self.quotas: dict[str, Quota] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()
        self.unavailable = False  # every call fails while set
        self.failing_writes = 0  # the next N write batches fail
        self.batches: list[list[ReplyWrite]] = []
        self.stop_requests: set[tuple[str, str, str]] = set()
        self.claims_started = threading.Event()  # set when a claim's write begins
        self.claim_gate: threading.Event | None = None  # a claim's commit waits on it

    def _check(self) -> None:

        if self.unavailable:
            raise StoreUnavailable()

    def _bump(self, key: tuple[str, str], message_id: str) -> int:
        version = next(self._counter)
        self.versions[(*key, message_id)] = (version, self.now)
        return version

    def _read(self, key: tuple[str, str], message: Message) -> Message:
        version, written = self.versions[(*key, message.id)]
        unsettled = message.status in UNSETTLED
        lapsed = unsettled and self.now - written > self.lease_seconds
        return replace(message, version=version, lapsed=lapsed)

    def wait_for(self, found: Callable[[], Any], timeout: float = 5.0) -> Any:
        """What `found` returns once it is something, as another thread gets there."""
        deadline = time.monotonic() + timeout
        while not (value := found()):
            assert time.monotonic() < deadline, "it never came"
            time.sleep(0.005)
        return value

    def doc(self, session: str, step: str, message_id: str) -> Message | None:
        message = self.messages.get((session, step), {}).get(message_id)
        return None if message is None else self._read((session, step), message)

    # The store's contract ------------------------------------------------------------------

    def read(self, uid: str, now: float) -> Spend:
        day = utc_day(now)
        with self._lock:
            user, project = self.spent.get((day, uid), 0), self.spent.get((day, ""), 0)
        return Spend(day, user, project, *self.limits)

    def charge(self, uid: str, tokens: int) -> None:
        day = utc_day(self.now)
        for who in (uid, ""):
            self.spent[(day, who)] = self.spent.get((day, who), 0) + tokens

    def open(
        self,
        session_id: str,
        step_id: str,
        uid: str,
        quota: int = 0,
        budget: bool = False,
        seen: Sequence[str] = (),
    ) -> Conversation:
        """`seen` is a hint at what a copy lacks: this store keeps no copies."""
        self._check()
        spend = self.read(uid, self.now) if budget and any(self.limits) else None
        owner = self.owners.get(session_id)
        if owner is not None and owner != uid:
            return Conversation(session_id, step_id, uid, True, spend=spend)  # nothing read
        with self._lock:
            stored = sorted(
                self.messages.get((session_id, step_id), {}).values(), key=lambda m: m.created_at
            )
            messages = [self._read((session_id, step_id), m) for m in stored]
            version = self.heads.get(session_id, 0)
            counted = replace(self.quotas.get(uid, Quota()), per_minute=quota) if quota else None
        role: Role | None = "owner" if owner is not None else None
        return Conversation(
            session_id,
            step_id,
            uid,
            owner is not None,
            messages,
            version,
            counted,
            role=role,
            spend=spend,
        )

    def touch(self, session_id: str) -> None:
        """Someone else wrote the session (a summary, another step's turn)."""
        with self._lock:
            self.heads[session_id] = self.heads.get(session_id, 0) + 1

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: Mode,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | Moved | None:
        self.claims_started.set()
        if self.claim_gate is not None:
            self.claim_gate.wait(10)
        self._check()
        key = (conversation.session_id, conversation.step_id)
        generation = f"g{next(self._counter)}"
        fresh = mode == "new" or (mode == "queue" and seen_reply is None)
        waited = mode in ("queue", "start")  # counted when it was stored; nothing deleted
        with self._lock:
            step = self.messages.setdefault(key, {})
            if fresh:
                if user.id in step or reply_id in step:
                    return None
                moved = self.heads.get(key[0], 0) != conversation.head_version
            if fresh and not moved:
                self.owners.setdefault(key[0], conversation.uid)
                step[user.id] = Message(
                    user.id, "user", user.text, "complete", now, now, author=user.author
                )
                self._bump(key, user.id)
            elif not fresh:
                current = step.get(reply_id)
                expected = seen_reply.generation if seen_reply else None
                if (current.generation if current else None) != expected:
                    return None
                lapsed = seen_reply is not None and seen_reply.lapsed
                if lapsed and self.versions[(*key, reply_id)][0] != seen_reply.version:
                    return None
                if mode == "start" and (*key, reply_id) in self.stop_requests:
                    return None
                anchor = step[user.id] if mode == "edit" else (current or step[user.id])
                later = [m.id for m in step.values() if m.created_at > anchor.created_at]
                for mid in [] if waited else later:
                    if mid != reply_id:
                        del step[mid]
                if mode == "edit":
                    step[user.id] = replace(step[user.id], text=user.text)
            if not fresh or not moved:
                self.heads[key[0]] = self.heads.get(key[0], 0) + 1
                if conversation.quota is not None and not (waited and not fresh):
                    self.quotas[conversation.uid] = conversation.quota.after_turn(now)
                created = seen_reply.created_at if seen_reply else step[user.id].created_at + 0.001
                fresh = Message(
                    reply_id,
                    "assistant",
                    "",
                    "queued" if mode == "queue" else "streaming",
                    created,
                    now,
                    user.id,
                    generation=generation,
                )
                if mode == "continue" and seen_reply is not None:  # its content stays
                    fresh = with_content(fresh, step[reply_id])
                step[reply_id] = fresh
                version = self._bump(key, reply_id)
                return Claim(key, reply_id, version, created, generation, uid=conversation.uid)
        limit = conversation.quota.per_minute if conversation.quota else 0
        return Moved(self.open(key[0], key[1], conversation.uid, limit))

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        self._check()
        with self._lock:
            return self.doc(session_id, step_id, reply_id)

    def pending(self, session_id: str, step_id: str) -> list[Message]:
        self._check()
        with self._lock:
            step = self.messages.get((session_id, step_id), {})
            found = [self._read((session_id, step_id), m) for m in step.values()]
        unsettled = (m for m in found if m.status in UNSETTLED)
        return sorted(unsettled, key=lambda m: m.created_at)

    def request_stop(self, session_id: str, step_id: str, reply_id: str) -> bool:
        self._check()
        with self._lock:
            if reply_id not in self.messages.get((session_id, step_id), {}):
                return False
            self.stop_requests.add((session_id, step_id, reply_id))
            self._bump((session_id, step_id), reply_id)
        return True

    def session_lock(self, session_id: str) -> threading.Lock:
        return self._step_lock

    def spend_minute(self, uid: str, now: float, per_minute: int) -> None:
        self._check()
        self.quotas[uid] = Quota(now, per_minute, None, per_minute)

    def write_replies(self, writes: list[ReplyWrite]) -> list[WriteOutcome]:
        self.batches.append(writes)
        if self.unavailable or self.failing_writes:
            self.failing_writes = max(0, self.failing_writes - 1)
            return [WriteOutcome.UNSTORED] * len(writes)
        outcomes = []
        with self._lock:
            for write in writes:
                claim = write.claim
                assert isinstance(claim, Claim)
                stored = self.messages.get(claim.key, {}).get(claim.reply_id)
                if stored is None or stored.generation != claim.generation:
                    outcomes.append(WriteOutcome.LOST)
                    continue
                version = self.versions[(*claim.key, claim.reply_id)][0]
                if version != claim.update_time:
                    # Still this generation's: carry on from the version found, as the real
                    # store does after reading the document.
                    claim.update_time = version
                    stop = (*claim.key, claim.reply_id) in self.stop_requests
                    outcomes.append(
                        WriteOutcome.STOP
                        if stop and write.ending is None
                        else WriteOutcome.UNSTORED
                    )
                    continue
                if write.content is not None:
                    stored = with_content(stored, write.content)
                if write.ending is not None and not claim.charged:
                    claim.charged = True
                    self.charge(claim.uid, tokens_of(write.ending.usage))
                if write.ending is not None:
                    e = write.ending
                    stored = replace(
                        stored,
                        status=e.status,
                        finish_reason=e.finish_reason,
                        usage=e.usage,
                        model=e.model,
                    )
                self.messages[claim.key][claim.reply_id] = stored
                claim.update_time = self._bump(claim.key, claim.reply_id)
                outcomes.append(WriteOutcome.WROTE)
        return outcomes

    # What tests do to it -------------------------------------------------------------------

    def take_over(self, session: str, step: str, reply_id: str) -> None:
        """Another instance regenerates the reply: a new generation owns the document."""
        with self._lock:
            key = (session, step)
            self.messages[key][reply_id] = replace(
                self.messages[key][reply_id], generation="other", text=""
            )
            self._bump(key, reply_id)


def with_content(message: Message, source: Message | Content) -> Message:
    """`message` holding what `source` holds: its text, thoughts, sources, calls and steps."""
    return replace(
        message,
        text=source.text,
        reasoning=source.reasoning,
        sources=source.sources,
        tools=source.tools,
        steps=source.steps,
    )


class ScriptedModel:
    """A model whose every item the test hands in; it records calls and closed streams."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.tools: list[tuple[Any, ...]] = []  # what each call declared
        self.results: list[Any] = []  # the calls and results each call was given
        self.closed = 0
        self._closing = threading.Condition()
        self._queues: list[asyncio.Queue[Any]] = []
        self.started = threading.Semaphore(0)

    async def stream(
        self,
        system: str,
        contents: list[tuple[str, str]],
        thinking_budget: int | None = None,
        files: Any = None,
        on_sent: Any = None,
        *,
        tools: tuple[Any, ...] = (),
        calls: Any = None,
    ) -> Any:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if on_sent is not None:
            on_sent()
        self.calls.append(list(contents))
        self.tools.append(tools)
        self.results.append(dict(calls or {}))
        self._queues.append(queue)
        self.started.release()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, ModelDone):
                    return
        finally:
            with self._closing:
                self.closed += 1
                self._closing.notify_all()

    def wait_closed(self, count: int = 1) -> int:
        """Cancelling happens in the loop: wait until `count` streams were closed."""
        with self._closing:
            self._closing.wait_for(lambda: self.closed >= count, 5)
            return self.closed

    def wait_call(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=5), "the model was not called"

    def send(self, *items: Any, call: int = -1) -> None:
        """Hand items to a call's stream (text as str, ModelDone, or an exception)."""
        queue = self._queues[call]
        loop = aio.loop()
        for item in items:
            value = ModelText(item) if isinstance(item, str) else item
            loop.call_soon_threadsafe(queue.put_nowait, value)

    def finish(self, reason: str = "stop", call: int = -1) -> None:
        self.send(ModelDone(reason, {"inputTokens": 1, "outputTokens": 2}, "scripted-1"), call=call)


class MemoryBoard:
    """The board in memory, with the store's rules: creates skip ids already there, the size
    is bounded, a change bumps the version. `gate`, when set, is waited on before a write
    lands (a test holds a tool round open with it)."""

    def __init__(self) -> None:
        self.items_by_session: dict[str, dict[str, BoardItem]] = {}
        self.gate: threading.Event | None = None
        self.writes = 0

    def _wait(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(5), "the test never opened the gate"

    def items(self, session_id: str, version: str | None = None) -> list[BoardItem]:
        return list(self.items_by_session.get(session_id, {}).values())

    def add(self, session_id: str, items: list[BoardItem]) -> None:
        self._wait()
        board = self.items_by_session.setdefault(session_id, {})
        new = [item for item in items if item.id not in board]
        if len(board) + len(new) > MAX_BOARD_ITEMS:
            raise BoardError("board_full", "the board is full")
        for item in new:
            board[item.id] = item
            self.writes += 1

    def change(self, session_id: str, change: Change, by: str, now: float) -> BoardItem:
        self._wait()
        item = self.items_by_session.get(session_id, {}).get(change.item_id)
        if item is None:
            raise NotFound("item_not_found", "no board item with that id")
        changed = replace(
            item,
            title=change.title if change.title is not None else item.title,
            detail=change.detail if change.detail is not None else item.detail,
            updated_at=now,
            version=item.version + 1,
        )
        self.items_by_session[session_id][item.id] = changed
        self.writes += 1
        return changed

    def remove(self, session_id: str, item_id: str) -> bool:
        self._wait()
        self.writes += 1
        return self.items_by_session.get(session_id, {}).pop(item_id, None) is not None
