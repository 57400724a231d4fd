"""This process's replies: each one launched (asked and claimed, or claimed and asked),
tracked until it settles, and forgotten then; and the files a message brings, stored before a
document names them. `turns.Turns` decides which reply a request needs; this makes it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from . import aio
from .asking import Asked, Asking, named
from .attachments import Attachments
from .checkpoints import Checkpointer
from .domain import (
    REPLACED_TEXT,
    Ending,
    Event,
    Failed,
    FileRef,
    Message,
    Mode,
    NewFile,
    UserMessage,
    reply_id_for,
)
from .errors import InvalidRequest, NotFound, RateLimited
from .generation import Carry, Limits, drive
from .outcomes import Workshop
from .ports import Board, Budgets, Claim, Conversation, Conversations, Model, Moved, Sessions
from .reply import Reply
from .team import must_write
from .telemetry import QUIET, Telemetry

_SEND_WAIT = 0.05  # seconds: never longer than it takes to build a request


@dataclass(frozen=True)
class Stores:
    """What a chat keeps outside the process: each step's conversation and the claims on its
    replies (with the per-user rate limit), whole sessions, files (None: this deployment
    takes none), and what each user has spent today."""

    conversations: Conversations
    sessions: Sessions
    attachments: Attachments | None = None
    budgets: Budgets | None = None  # the daily token ledger (None: no budgets)
    board: Board | None = None  # the workshop board (None: no tools)


@dataclass(frozen=True)
class Settings:
    history_max_chars: int
    rate_limit_per_minute: int
    session_rate_limit_per_minute: int
    keepalive_seconds: float
    # How often a follower looks at a reply generated on another instance (and a waiting
    # reply at the replies ahead of it).
    follow_seconds: float
    limits: Limits
    max_queued: int = 4  # replies waiting in a step behind the one generating
    lease_seconds: float = 8.0


def check_access(conversation: Conversation, write: bool = False) -> None:
    """Someone else's session, or one being deleted, is as missing as one that never was; a
    viewer may read it, and a turn is a write."""
    if conversation.session_exists and (conversation.role is None or conversation.deleting):
        raise NotFound("not_found", "no such session")
    if write:
        must_write(conversation.role)


def check_quota(conversation: Conversation, now: float, session_limit: int = 0) -> None:
    """A turn that asks the model counts against its user's minute and day, and the
    project's day; one past any of them asks nothing."""
    spend = conversation.spend
    refusal = spend.refusal(now) if spend is not None else None
    if refusal is not None:
        raise refusal
    quota = conversation.quota
    wait = quota.wait(now) if quota is not None else None
    if wait is not None:
        raise RateLimited("rate_limited", "too many messages; wait a moment", wait)
    wait = replace(conversation.session_turns, per_minute=session_limit).wait(now)
    if wait is not None:
        raise RateLimited(
            "session_rate_limited", "this session has had too many turns; wait a moment", wait
        )


def superseded_files(conversation: Conversation, user: UserMessage) -> tuple[str, ...]:
    """The edited message's objects it no longer names: they go once the edit is stored."""
    stored = conversation.get(user.id)
    kept = {f.path for f in user.files}
    old: tuple[FileRef, ...] = stored.files if stored is not None else ()
    return tuple(f.path for f in old if f.path not in kept)


class Generations:
    """The replies this process generates, by (session, step, reply id)."""

    def __init__(
        self,
        stores: Stores,
        model: Model,
        workshop: Workshop,
        checkpointer: Checkpointer,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry = QUIET,
    ) -> None:
        self.attachments = stores.attachments
        self.board = stores.board
        self.store = stores.conversations
        self.model = model
        self.workshop = workshop
        self.checkpointer = checkpointer
        self.settings = settings
        self.clock = clock
        self.telemetry = telemetry
        self.asking = Asking(
            workshop,
            stores.board,
            stores.attachments,
            settings.history_max_chars,
            clock,
            telemetry,
        )
        self._active: dict[tuple[str, str, str], Reply] = {}
        self._lock = threading.Lock()

    def local(
        self, session_id: str, step_id: str | None = None, claimed: bool = True
    ) -> list[Reply]:
        """This instance's replies in the step, or in the whole session (a stop also takes one
        still claiming)."""
        with self._lock:
            return [
                reply
                for (s, t, _), reply in self._active.items()
                if s == session_id
                and step_id in (None, t)
                and (reply.claim is not None or not claimed)
            ]

    def active(self, slot: tuple[str, str, str]) -> Reply | None:
        """The reply this process generates (or claims) in the slot."""
        with self._lock:
            return self._active.get(slot)

    def store_files(
        self, key: tuple[str, str], message_id: str, new: tuple[NewFile, ...], uploaded: list[str]
    ) -> tuple[FileRef, ...]:
        """A message's new files, named and uploaded (noted in `uploaded`) before a document
        names them."""
        named = self.attachments_or_refuse().name(key, message_id, new)
        self._upload(new, named, uploaded)
        return named

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    def join(self, reply: Reply) -> Iterator[Event] | None:
        """An identical request on this instance: wait for its claim, then share its events."""
        if reply.wait_claim(self.settings.limits.stall_seconds):
            return reply.listen(self.settings.keepalive_seconds)
        return None

    def generate(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        mode: Mode,
        trace: str | None,
        seen_reply: Message | None = None,
        new: tuple[NewFile, ...] = (),
        uploaded: list[str] | None = None,
        *,
        carry: Carry | None = None,
    ) -> Iterator[Event] | None:
        """Ask the model, then claim the reply beside its call; text flows once the claim
        holds. `new`: the files the message brings, not stored yet; the objects written for
        them are noted in `uploaded`."""
        reply_id = reply_id_for(user.id)
        slot = (*key, reply_id)
        if mode not in ("resume", "continue", "start"):
            seen_reply = conversation.get(reply_id)
        reply = Reply(reply_id, self.model.name, lambda r: self._settled(slot, r))
        reply.trace = self.telemetry.current()
        if carry is not None:
            reply.carry_on(carry.reply)
        with self._lock:
            current = self._active.get(slot)
            if current is not None and mode in ("new", "resume"):
                joined: Reply | None = current
            else:
                joined = None
                if current is None:
                    self._active[slot] = reply  # before any I/O: twins collapse onto it
        if joined is not None:
            return self.join(joined)
        upload_later = False
        try:
            if mode != "start":  # a waiting reply was counted when it was stored
                check_quota(
                    conversation, self.clock(), self.settings.session_rate_limit_per_minute
                )  # before anything is uploaded or asked
            if new:
                # Uploaded before the claim's commit names them: before the model is asked on
                # Vertex AI, which reads them; else while the model starts on its inline copy.
                attachments = self.attachments_or_refuse()
                user = UserMessage(user.id, user.text, attachments.name(key, user.id, new))
                upload_later = not attachments.model_reads_bucket
                if not upload_later:
                    self._upload(new, user.files, uploaded)
            superseded = superseded_files(conversation, user) if mode == "edit" else ()
            asked = self.asking.contents(conversation, user)
            request = self.asking.request(key, conversation, asked, reply_id, carry)
        except BaseException:
            reply.abandon()
            raise
        where = {"sessionId": key[0], "stepId": key[1]}

        def ask() -> None:
            limits, telemetry = self.settings.limits, self.telemetry
            reply.task = aio.spawn(
                drive(reply, self.model, request, limits, where, trace, telemetry)
            )

        # A team's turns can race for the step: a call made beside a claim that then finds
        # the step busy would be cancelled, and a cancelled call is paid for. So a team's
        # turn, and a reply whose turn came, claim first and ask after; a turn of one asks
        # first and wins the claim's round trip.
        ask_first = mode != "start" and not named(conversation)
        if ask_first:
            ask()
        try:
            if upload_later:
                self._upload(new, user.files, uploaded)
            # The claim goes once the model request has left: built in the loop thread, it
            # would otherwise share the interpreter with the claim's encoding. A model that
            # answers at once still waits for the claim before any text is relayed.
            if ask_first:
                reply.sent.wait(_SEND_WAIT)
            claim = self._claim(conversation, user, reply, mode, seen_reply, asked)
        except BaseException:
            reply.abandon()  # the model call is cancelled, and nothing was written
            raise
        if claim is None:
            reply.abandon()
            return None
        if not ask_first:
            ask()
        self._start(slot, reply, claim, superseded)
        return reply.listen(self.settings.keepalive_seconds)

    def _start(
        self, slot: tuple[str, str, str], reply: Reply, claim: Claim, superseded: tuple[str, ...]
    ) -> None:
        """The claim holds: this generation is the reply's, its checkpoints begin."""
        with self._lock:
            old = self._active.get(slot)
            self._active[slot] = reply
        if old is not None and old is not reply:
            old.end(Ending("error", "error", failure=Failed(REPLACED_TEXT)), write=False)
        self.checkpointer.track(reply)
        reply.claimed(claim, self.checkpointer)
        if self.attachments is not None and (claim.removed or superseded):
            forget, key = self.attachments.forget, (slot[0], slot[1])
            aio.spawn(asyncio.to_thread(forget, key, claim.removed, superseded))

    def _claim(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply: Reply,
        mode: Mode,
        seen_reply: Message | None,
        asked: Asked,
    ) -> Claim | None:
        """The claim's commit, beside the model call. When the session moved since it was read
        (another step's turn, a summary landing), the call stands as long as what it was asked
        is still the whole conversation: the claim is made again on what is stored now."""
        for _ in range(4):
            claim = self.begin(conversation, user, reply.id, mode, self.clock(), seen_reply)
            if not isinstance(claim, Moved):
                return claim
            conversation = claim.conversation
            check_access(conversation, write=True)
            check_quota(conversation, self.clock(), self.settings.session_rate_limit_per_minute)
            if self.asking.contents(conversation, user) != asked:
                return None  # a turn landed first: this one is asked again, with it in context
        return None

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: Mode,
        now: float,
        seen: Message | None,
    ) -> Claim | Moved | None:
        """The claim's write, as its trace shows it."""
        attributes = {
            "db.system.name": "firestore",
            "db.operation.name": "claim",
            "workshop_chat.mode": mode,
            "workshop_chat.reply.id": reply_id,
        }
        with self.telemetry.span("firestore claim", attributes, kind="client") as span:
            claim = self.store.begin(conversation, user, reply_id, mode, now, seen)
            won = "moved" if isinstance(claim, Moved) else "lost" if claim is None else "won"
            span.set({"workshop_chat.claim": won})
        return claim

    def _upload(
        self, new: tuple[NewFile, ...], named: tuple[FileRef, ...], uploaded: list[str] | None
    ) -> None:
        if uploaded is not None:  # before: an upload that fails half way has written some
            uploaded.extend(f.path for f in named)
        self.attachments_or_refuse().upload(new, named)

    def attachments_or_refuse(self) -> Attachments:
        if self.attachments is None:
            raise InvalidRequest("files_unsupported", "this deployment takes no files")
        return self.attachments

    def _settled(self, slot: tuple[str, str, str], reply: Reply) -> None:
        """The last step of a reply's end: this process forgets it, and its step's outcome is
        refreshed when the step's history grew."""
        with self._lock:
            if self._active.get(slot) is reply:
                del self._active[slot]
        if reply.worth_summarizing:
            self.workshop.after_reply(slot[0], slot[1], reply.trace)
