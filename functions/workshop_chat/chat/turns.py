"""What a chat turn is: new, re-send, edit, regenerate, take-over or follow. Decisions only.

The reply's own life (its claim, text, listeners and end) is `reply.Reply`; the model stream
runs in the process's event loop (`reply.drive`); writes after the claim go through the
process's `Checkpointer`. This module picks which of those a request needs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import aio
from .attachments import Attachments
from .checkpoints import Checkpointer
from .domain import (
    CUT_TEXT,
    REPLACED_TEXT,
    BadRequest,
    Conflict,
    Ending,
    Event,
    Failed,
    Finished,
    KeepAlive,
    Message,
    Model,
    Moved,
    NotFound,
    RateLimited,
    ReasoningDelta,
    Started,
    StoreUnavailable,
    TextDelta,
    Turn,
    Unavailable,
    UserMessage,
    metadata,
    reply_id_for,
)
from .outcomes import Workshop
from .reply import Limits, Reply, Request, drive

log = logging.getLogger("workshop_chat.chat.turns")


class Conversation(Protocol):
    messages: list[Message]
    session_exists: bool

    def get(self, message_id: str) -> Message | None: ...


class Store(Protocol):
    def open(self, session_id: str, step_id: str, uid: str, quota: int = 0) -> Any:
        """The session as it is now and the step's history (with the caller's rate-limit
        state, held to `quota` turns a minute, when set); NotFound when the session is
        someone else's."""

    def begin(
        self,
        conversation: Any,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen_reply: Message | None,
    ) -> Any:
        """A claim, None when a racing request won, or `Moved` with what is stored now."""

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None: ...

    def streaming(self, session_id: str, step_id: str) -> list[Message]: ...

    def request_stop(self, session_id: str, step_id: str, reply_id: str) -> bool: ...

    def session_lock(self, session_id: str) -> AbstractContextManager[Any]:
        """Held from reading a session's state to committing a claim on it."""


class Sessions(Protocol):
    def overview(self, session_id: str, uid: str) -> list[dict[str, Any]]: ...

    def mark_deleting(self, session_id: str, uid: str) -> None: ...

    def step_ids(self, session_id: str) -> list[str]: ...

    def delete_session(self, session_id: str, uid: str) -> int: ...


@dataclass(frozen=True)
class Stores:
    """What a chat keeps outside the process: each step's conversation and the claims on its
    replies (with the per-user rate limit), whole sessions, and files (None: this deployment
    takes none)."""

    conversations: Store
    sessions: Sessions
    attachments: Attachments | None = None


@dataclass(frozen=True)
class Settings:
    history_max_chars: int = 200_000
    rate_limit_per_minute: int = 0
    keepalive_seconds: float = 10.0
    # How often a follower looks at a reply generated on another instance.
    follow_seconds: float = 1.0
    limits: Limits = field(default_factory=Limits)


UNAVAILABLE = "storage is unavailable; try again"
_SEND_WAIT = 0.05  # seconds: never longer than it takes to build a request


class Chat:
    """Runs turns. Clients are injected so tests hand in the emulator and the stand-in, or an
    in-memory store and a scripted model."""

    def __init__(
        self,
        stores: Stores,
        model: Model,
        workshop: Workshop,
        checkpointer: Checkpointer,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.attachments = stores.attachments
        self.store = stores.conversations
        self.model = model
        self.workshop = workshop
        self.checkpointer = checkpointer
        self.settings = settings
        self.clock = clock
        self._active: dict[tuple[str, str, str], Reply] = {}
        self._lock = threading.Lock()

    # The entry points ------------------------------------------------------------------

    def run(self, turn: Turn, uid: str, trace: str | None = None) -> Iterator[Event]:
        """Claim or find the reply, then return its events. Raises ChatError before any event."""
        limit = self.settings.rate_limit_per_minute
        for _ in range(4):
            try:
                with self.store.session_lock(turn.session_id):
                    conversation = self.store.open(turn.session_id, turn.step_id, uid, limit)
                    events = self._decide(turn, conversation, trace)
            except StoreUnavailable as exc:
                raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
            if events is not None:
                return events
            # Lost a race to a twin or to a newer turn: look again at what is stored.
        raise Unavailable("busy", "the conversation is busy; try again")

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

    def checkpoint_all(self) -> int:
        """On SIGTERM: store the text of every reply in flight now."""
        return self.checkpointer.flush(everything=True)

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    # Decisions -------------------------------------------------------------------------

    def _decide(self, turn: Turn, conversation: Any, trace: str | None) -> Iterator[Event] | None:
        user = turn.user
        key = (turn.session_id, turn.step_id)
        if turn.trigger == "regenerate-message":
            # Without messageId the client regenerates the reply to its last user message.
            target = conversation.get(turn.target_id or reply_id_for(user.id))
            if target is None and turn.target_id in (None, user.id):
                stored_user = conversation.get(user.id)
            elif target is None or target.role != "assistant" or not target.reply_to:
                raise NotFound("message_not_found", "no reply with that messageId in this step")
            else:
                stored_user = conversation.get(target.reply_to)
            if stored_user is None or stored_user.role != "user":
                raise NotFound("message_not_found", "the message to answer is not stored")
            user = UserMessage(stored_user.id, stored_user.text, stored_user.files)
            return self._generate(key, conversation, user, "regenerate", trace)
        existing = conversation.get(user.id)
        if existing is None:
            return self._generate(key, conversation, user, "new", trace)
        if existing.role != "user":
            raise Conflict("id_in_use", "that message id belongs to another message")
        same_files = [f.sha256 for f in existing.files] == [f.sha256 for f in user.files]
        if existing.text != user.text or not same_files:
            if turn.target_id != user.id:
                raise Conflict("id_in_use", "a different message with that id is stored")
            return self._generate(key, conversation, user, "edit", trace)
        # A re-send: the stored message, with the files it already names.
        user = UserMessage(existing.id, existing.text, existing.files)
        return self._resend(key, conversation, user, trace)

    def _resend(
        self, key: tuple[str, str], conversation: Any, user: UserMessage, trace: str | None
    ) -> Iterator[Event] | None:
        """A re-sent message never starts a second generation of a live reply."""
        reply_id = reply_id_for(user.id)
        with self._lock:
            active = self._active.get((*key, reply_id))
        if active is not None:
            return self._join(active)
        reply = self.store.reply(key[0], key[1], reply_id)
        if reply is None or reply.status in ("error", "stopped") or reply.lapsed:
            # Nothing usable, or its instance died: answering it again is the retry.
            return self._generate(key, conversation, user, "resume", trace, reply)
        if reply.status == "streaming":
            return self.follow(key, conversation, user, reply, trace)
        return iter(_replay(reply))

    def _join(self, reply: Reply) -> Iterator[Event] | None:
        """An identical request on this instance: wait for its claim, then share its events."""
        if reply.wait_claim(self.settings.limits.stall_seconds):
            return reply.listen(self.settings.keepalive_seconds)
        return None

    # Generations -----------------------------------------------------------------------

    def _generate(
        self,
        key: tuple[str, str],
        conversation: Any,
        user: UserMessage,
        mode: str,
        trace: str | None,
        seen_reply: Message | None = None,
    ) -> Iterator[Event] | None:
        """Start the model call and the claim together; text flows once the claim holds."""
        reply_id = reply_id_for(user.id)
        slot = (*key, reply_id)
        if mode != "resume":
            seen_reply = conversation.get(reply_id)
        reply = Reply(reply_id, self.model.name, lambda r: self._retire(slot, r))
        with self._lock:
            current = self._active.get(slot)
            if current is not None and mode in ("new", "resume"):
                joined: Reply | None = current
            else:
                joined = None
                if current is None:
                    self._active[slot] = reply  # before any I/O: twins collapse onto it
        if joined is not None:
            return self._join(joined)
        superseded: tuple[str, ...] = ()
        unsent: UserMessage | None = None  # a new message whose files are still to upload
        try:
            self._check_quota(conversation)  # before anything is uploaded or asked
            if mode in ("new", "edit") and user.files:
                # Uploaded before the claim's commit names them: before the model is asked on
                # Vertex AI, which reads them; else while the model starts on its inline copy.
                attachments = self._attachments()
                unsent, user = user, attachments.name(key, user)
                if attachments.model_reads_bucket:
                    attachments.upload(unsent, user)
                    unsent = None
            if mode == "edit":
                # The edited message's old objects go once the edit is stored.
                stored = conversation.get(user.id)
                kept = {f.path for f in user.files}
                old = stored.files if stored is not None else ()
                superseded = tuple(f.path for f in old if f.path not in kept)
            contents, files = model_contents(conversation, user, self.settings.history_max_chars)
            parts = self.attachments.for_model(files) if self.attachments else {}
        except BaseException:
            reply.abandon()
            raise
        # The step's own turns take precedence; earlier steps' outcomes get what is left.
        room = self.settings.history_max_chars - sum(len(text) for _, text in contents)
        system = self.workshop.system(key[1], conversation, room)
        where = {"sessionId": key[0], "stepId": key[1]}
        request = Request(system, contents, self.workshop.thinking_budget(key[1]), parts)
        reply.task = aio.spawn(
            drive(reply, self.model, request, self.settings.limits, where, trace)
        )
        try:
            if unsent is not None:
                self._attachments().upload(unsent, user)
            # The claim goes once the model request has left: built in the loop thread, it
            # would otherwise share the interpreter with the claim's encoding. A model that
            # answers at once still waits for the claim before any text is relayed.
            reply.sent.wait(_SEND_WAIT)
            claim = self._claim(conversation, user, reply, mode, seen_reply, (contents, files))
        except BaseException:
            reply.abandon()  # the model call is cancelled, and nothing was written
            raise
        if claim is None:
            reply.abandon()
            return None
        with self._lock:
            old = self._active.get(slot)
            self._active[slot] = reply
        if old is not None and old is not reply:
            old.end(Ending("error", "error", failure=Failed(REPLACED_TEXT)), write=False)
        self.checkpointer.track(reply)
        reply.claimed(claim, self.checkpointer)
        if self.attachments is not None and (claim.removed or superseded):
            forget = self.attachments.forget
            aio.spawn(asyncio.to_thread(forget, key, claim.removed, superseded))
        return reply.listen(self.settings.keepalive_seconds)

    def _claim(
        self,
        conversation: Any,
        user: UserMessage,
        reply: Reply,
        mode: str,
        seen_reply: Message | None,
        asked: tuple[list[tuple[str, str]], list[tuple[Any, ...]]],
    ) -> Any:
        """The claim's commit, beside the model call. When the session moved since it was read
        (another step's turn, a summary landing), the call stands as long as what it was asked
        is still the whole conversation: the claim is made again on what is stored now."""
        for _ in range(4):
            claim = self.store.begin(conversation, user, reply.id, mode, self.clock(), seen_reply)
            if not isinstance(claim, Moved):
                return claim
            conversation = claim.conversation
            self._check_quota(conversation)
            if model_contents(conversation, user, self.settings.history_max_chars) != asked:
                return None  # a turn landed first: this one is asked again, with it in context
        return None

    def _check_quota(self, conversation: Any) -> None:
        """A turn that asks the model counts against its user's minute; one past it, none."""
        quota = conversation.quota
        wait = quota.wait(self.clock()) if quota is not None else None
        if wait is not None:
            raise RateLimited("rate_limited", "too many messages; wait a moment", wait)

    def _attachments(self) -> Attachments:
        if self.attachments is None:
            raise BadRequest("files_unsupported", "this deployment takes no files")
        return self.attachments

    def _retire(self, slot: tuple[str, str, str], reply: Reply) -> None:
        with self._lock:
            if self._active.get(slot) is reply:
                del self._active[slot]
        if reply.worth_summarizing:  # the step's history grew: its outcome follows
            self.workshop.after_reply(slot[0], slot[1])

    def follow(
        self,
        key: tuple[str, str],
        conversation: Any,
        user: UserMessage,
        reply: Message,
        trace: str | None,
    ) -> Iterator[Event]:
        """Another instance is generating: relay its checkpoints until the reply settles.

        Nothing is relayed until the reply is seen to move (a checkpoint or a lease renewal),
        so a retry after a crash relays none of the dead generation's text: when the lease
        lapses, this request takes the reply over and streams the new generation whole.
        """
        sent, thought, started, alive = "", "", False, False
        while True:
            if reply.lapsed and not started:
                events = self._generate(key, conversation, user, "resume", trace, reply)
                if events is not None:
                    yield from events
                    return
            elif reply.lapsed:
                self._generate(key, conversation, user, "resume", trace, reply)
                yield Failed(CUT_TEXT)
                return
            elif reply.status != "streaming" and not started:
                yield from _replay(reply)
                return
            elif alive:
                if not started:
                    # While it streams, the document names no model yet: every instance
                    # runs the same one.
                    model = reply.model or self.model.name
                    yield Started(reply.id, metadata(reply.created_at, model))
                    started = True
                if not (reply.text.startswith(sent) and reply.reasoning.startswith(thought)):
                    yield Failed(REPLACED_TEXT, cause="replaced")  # regenerated meanwhile
                    return
                if len(reply.reasoning) > len(thought):
                    yield ReasoningDelta(reply.reasoning[len(thought) :])
                    thought = reply.reasoning
                if len(reply.text) > len(sent):
                    yield TextDelta(reply.text[len(sent) :])
                    sent = reply.text
                if reply.status != "streaming":
                    yield from reply.sources
                    yield _ending(reply)
                    return
            time.sleep(self.settings.follow_seconds)
            try:
                fresh = self.store.reply(key[0], key[1], reply.id)
            except StoreUnavailable as exc:
                if not started:
                    raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
                yield Failed(CUT_TEXT, cause="storage")
                return
            if fresh is None:
                yield Failed(REPLACED_TEXT, cause="replaced")
                return
            alive = alive or fresh.version != reply.version
            reply = fresh
            yield KeepAlive()


def model_contents(
    conversation: Any, user: UserMessage, max_chars: int
) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """Stored history before the user message, newest kept within `max_chars`; and the files
    of each of those contents."""
    history: list[tuple[str, str, tuple[Any, ...]]] = []
    for message in conversation.messages:
        if message.id == user.id:
            break
        if message.role == "user" and (message.text.strip() or message.files):
            history.append(("user", message.text, message.files))
        elif (
            message.role == "assistant"
            and message.text.strip()
            and message.status in ("complete", "streaming", "stopped")
            and message.finish_reason != "content-filter"
        ):
            history.append(("model", message.text, ()))
    budget = max_chars - len(user.text)
    kept: list[tuple[str, str, tuple[Any, ...]]] = []
    for item in reversed(history):
        budget -= len(item[1])
        if budget < 0:
            break
        kept.append(item)
    kept.reverse()
    while kept and kept[0][0] != "user":
        kept.pop(0)
    kept.append(("user", user.text, user.files))
    return [(role, text) for role, text, _ in kept], [files for _, _, files in kept]


def _replay(reply: Message) -> list[Event]:
    """A stored reply as a stream: its thoughts, its text and its sources, then its end."""
    events: list[Event] = [Started(reply.id, metadata(reply.created_at, reply.model))]
    if reply.reasoning:
        events.append(ReasoningDelta(reply.reasoning))
    if reply.text:
        events.append(TextDelta(reply.text))
    events.extend(reply.sources)
    events.append(_ending(reply))
    return events


def _ending(reply: Message) -> Event:
    meta = metadata(reply.created_at, reply.model, reply.usage)
    if reply.status == "error":
        return Failed(CUT_TEXT, metadata=meta)
    if reply.status == "stopped":
        meta["status"] = "stopped"
    return Finished(reply.finish_reason or "stop", meta)
