"""The flow of one chat turn, independent of HTTP, Firestore and Gemini details.

A turn is claimed in the store before the model is called, so a duplicate request can never
start a second generation. A worker thread owns the generation and its persistence: it finishes
and stores the reply even when every listener has gone, and listeners only replay its events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

log = logging.getLogger("workshop_chat.turn")


# --- Domain values ------------------------------------------------------------------------


@dataclass(frozen=True)
class UserMessage:
    id: str
    text: str


@dataclass(frozen=True)
class Turn:
    session_id: str
    step_id: str
    user: UserMessage
    trigger: str = "submit-message"
    target_id: str | None = None


@dataclass(frozen=True)
class Message:
    """A stored message as the domain sees it (text only: the model gets nothing else)."""

    id: str
    role: str
    text: str
    status: str
    created_at: float
    updated_at: float
    reply_to: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    # Which generation wrote a reply: the optimistic lock for regenerate, edit and resume.
    generation: str | None = None


# --- Events the turn emits; protocol.py encodes them ---------------------------------------


@dataclass(frozen=True)
class Started:
    message_id: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """A reply that ended badly. `status` is the HTTP status to use if nothing was sent yet."""

    error_text: str
    finish_reason: str = "error"
    status: int = 502
    metadata: dict[str, Any] | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class KeepAlive:
    pass


Event = Started | TextDelta | Finished | Failed | KeepAlive


# --- Domain errors, mapped to HTTP by http.py ---------------------------------------------


class ChatError(Exception):
    status = 400

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(ChatError):
    status = 400


class Unauthorized(ChatError):
    status = 401


class NotFound(ChatError):
    status = 404


class Conflict(ChatError):
    status = 409


class TooLarge(ChatError):
    status = 413


class RateLimited(ChatError):
    status = 429


class MethodNotAllowed(ChatError):
    status = 405


class UnsupportedMedia(ChatError):
    status = 415


class UpstreamFailed(ChatError):
    status = 502


class Unavailable(ChatError):
    status = 503


# --- What the turn needs from the store and the model --------------------------------------


class LostClaim(Exception):
    """Another generation took this reply over (regenerate, edit): stop writing it."""


class StoreUnavailable(Exception):
    """Firestore could not be reached or refused the write."""


class Conversation(Protocol):
    messages: list[Message]
    session_exists: bool

    def get(self, message_id: str) -> Message | None: ...


class Claim(Protocol):
    """A reply this process owns until `LostClaim`; writes carry a precondition."""

    created_at: float

    def checkpoint(self, text: str) -> None: ...

    def finish(
        self,
        text: str,
        status: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        model: str | None,
    ) -> None: ...


class Store(Protocol):
    def open(
        self, session_id: str, step_id: str, uid: str, fresh: bool = False
    ) -> Conversation: ...

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | None:
        """Store the user message and claim the reply; None when a racing request won.

        `mode` is new (both created), edit (user updated, later messages deleted),
        regenerate (later messages deleted) or resume (reply missing, failed or abandoned).
        Outside `new`, the claim holds only if the reply is still as `seen_reply` shows it.
        """

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None: ...

    def take_turn_token(self, uid: str, per_minute: int, now: float) -> int | None: ...


@dataclass(frozen=True)
class ModelText:
    text: str


@dataclass(frozen=True)
class ModelDone:
    finish_reason: str
    usage: dict[str, int] | None = None
    model: str | None = None
    blocked: bool = False


class ModelUnavailable(Exception):
    """Gemini refused before the first byte, after our retries (429/5xx)."""

    def __init__(self, retry_after: int | None = None) -> None:
        super().__init__("model unavailable")
        self.retry_after = retry_after


class ModelFailed(Exception):
    """Gemini failed after the stream began, or answered something we cannot use."""


class Model(Protocol):
    name: str

    def stream(
        self, system: str, contents: list[tuple[str, str]]
    ) -> Iterator[ModelText | ModelDone]: ...


# --- Safe texts: all a client ever learns about a failure -----------------------------------

BUSY_TEXT = "The assistant is busy right now. Please try again in a moment."
CUT_TEXT = "The reply was interrupted. Please try again."
STALL_TEXT = "The reply took too long and was stopped. Please try again."
SAVE_TEXT = "The reply could not be saved. Please try again."
BLOCKED_TEXT = "I can't help with that message. Please rephrase it."
REPLACED_TEXT = "This reply was replaced by a newer one."


def reply_id_for(user_message_id: str) -> str:
    """Derived, so a re-sent user message lands on the same reply document."""
    return f"{user_message_id}~reply"


# --- Generation: one worker, any number of listeners ---------------------------------------


@dataclass
class Generation:
    """The events of one reply, kept so that a late listener (a re-send) replays them all."""

    reply_id: str
    claim: Claim
    events: list[Event] = field(default_factory=list)
    done: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, event: Event) -> bool:
        """Append an event; False once the reply has ended (finished, failed or replaced)."""
        with self.cond:
            if self.done:
                return False
            self.events.append(event)
            self.last_activity = time.monotonic()
            if isinstance(event, Finished | Failed):
                self.done = True
            self.cond.notify_all()
            return True

    def text(self) -> str:
        with self.cond:
            return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    def listen(self, keepalive: float) -> Iterator[Event]:
        index = 0
        while True:
            with self.cond:
                if index >= len(self.events) and not self.done:
                    self.cond.wait(keepalive)
                pending = self.events[index:]
                index += len(pending)
                finished = self.done and index >= len(self.events)
            if not pending and not finished:
                yield KeepAlive()
            yield from pending
            if finished:
                return


class Chat:
    """Runs turns. Clients are injected so tests hand in the emulator and the stand-in."""

    def __init__(
        self,
        store: Store,
        model: Model,
        prompts: Callable[[str], str],
        *,
        history_max_chars: int,
        max_reply_bytes: int,
        rate_limit_per_minute: int = 0,
        keepalive_seconds: float = 10.0,
        checkpoint_seconds: float = 1.0,
        stall_seconds: float = 60.0,
        interrupted_after_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.model = model
        self.prompts = prompts
        self.history_max_chars = history_max_chars
        self.max_reply_bytes = max_reply_bytes
        self.rate_limit_per_minute = rate_limit_per_minute
        self.keepalive_seconds = keepalive_seconds
        self.checkpoint_seconds = checkpoint_seconds
        self.stall_seconds = stall_seconds
        self.interrupted_after_seconds = interrupted_after_seconds
        self.clock = clock
        self._active: dict[tuple[str, str, str], Generation] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chat-io")
        self._watchdog: threading.Thread | None = None

    # The entry point -------------------------------------------------------------------

    def run(self, turn: Turn, uid: str, trace: str | None = None) -> Iterator[Event]:
        """Claim or find the reply, then return its events. Raises ChatError before any event."""
        limited = None
        if self.rate_limit_per_minute:
            limited = self._pool.submit(
                self.store.take_turn_token, uid, self.rate_limit_per_minute, self.clock()
            )
        try:
            conversation = self.store.open(turn.session_id, turn.step_id, uid)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", "storage is unavailable; try again") from exc
        if limited is not None:
            try:
                retry_after = limited.result()
            except StoreUnavailable as exc:
                raise Unavailable("storage_unavailable", "storage is unavailable") from exc
            if retry_after is not None:
                raise RateLimited(
                    "rate_limited", "too many messages; wait a moment", retry_after=retry_after
                )
        for _ in range(3):
            events = self._try(turn, conversation, trace)
            if events is not None:
                return events
            # Lost a race with an identical request: look again at what is stored now.
            conversation = self.store.open(turn.session_id, turn.step_id, uid)
        raise Unavailable("busy", "the conversation is busy; try again")

    def history(self, session_id: str, step_id: str, uid: str) -> list[Message]:
        """The stored messages, read fresh; a reply stuck in `streaming` shows as interrupted."""
        try:
            conversation = self.store.open(session_id, step_id, uid, fresh=True)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", "storage is unavailable; try again") from exc
        if not conversation.session_exists:
            raise NotFound("not_found", "no such session")
        return [
            replace(m, status="interrupted") if self._is_interrupted(m) else m
            for m in conversation.messages
            # A reply that failed before saying anything is not a message: the live client
            # never showed it, and an empty assistant turn breaks clients that replay history.
            if not (m.role == "assistant" and m.status == "error" and not m.text)
        ]

    def _try(
        self, turn: Turn, conversation: Conversation, trace: str | None
    ) -> Iterator[Event] | None:
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
            user = UserMessage(stored_user.id, stored_user.text)
            return self._generate(key, conversation, user, "regenerate", trace)
        existing = conversation.get(user.id)
        if existing is None:
            return self._generate(key, conversation, user, "new", trace)
        if existing.role != "user":
            raise Conflict("id_in_use", "that message id belongs to another message")
        if existing.text != user.text:
            if turn.target_id != user.id:
                raise Conflict("id_in_use", "a different message with that id is stored")
            return self._generate(key, conversation, user, "edit", trace)
        return self._resend(key, conversation, user, trace)

    # Re-sends: never a second generation -----------------------------------------------

    def _resend(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        trace: str | None,
    ) -> Iterator[Event] | None:
        reply_id = reply_id_for(user.id)
        with self._lock:
            active = self._active.get((*key, reply_id))
        if active is not None:
            return active.listen(self.keepalive_seconds)
        reply = self.store.reply(key[0], key[1], reply_id)
        if reply is None or reply.status == "error" or self._is_interrupted(reply):
            # Nothing usable was stored for this message: answering it again is the retry.
            return self._generate(key, conversation, user, "resume", trace, reply)
        if reply.status == "streaming":
            return self._follow(key, reply)
        return iter(self._replay(reply))

    def _is_interrupted(self, reply: Message) -> bool:
        return (
            reply.status == "streaming"
            and self.clock() - reply.updated_at > self.interrupted_after_seconds
        )

    def _replay(self, reply: Message) -> list[Event]:
        events: list[Event] = [Started(reply.id, self._metadata(reply.created_at, reply.model))]
        if reply.text:
            events.append(TextDelta(reply.text))
        events.append(self._ending(reply))
        return events

    def _ending(self, reply: Message) -> Event:
        meta = self._metadata(reply.created_at, reply.model, reply.usage)
        if reply.status == "error":
            return Failed(CUT_TEXT, metadata=meta)
        return Finished(reply.finish_reason or "stop", meta)

    def _follow(self, key: tuple[str, str], reply: Message) -> Iterator[Event]:
        """Another instance is generating: relay its checkpoints until the reply settles."""
        yield Started(reply.id, self._metadata(reply.created_at, reply.model))
        sent = ""
        while True:
            if not reply.text.startswith(sent):  # regenerated meanwhile: not what we relayed
                yield Failed(REPLACED_TEXT)
                return
            if len(reply.text) > len(sent):
                yield TextDelta(reply.text[len(sent) :])
                sent = reply.text
            if reply.status != "streaming":
                yield self._ending(reply)
                return
            if self._is_interrupted(reply):
                yield Failed(CUT_TEXT)
                return
            time.sleep(min(self.checkpoint_seconds, self.keepalive_seconds))
            fresh = self.store.reply(key[0], key[1], reply.id)
            if fresh is None:
                yield Failed(REPLACED_TEXT)
                return
            reply = fresh
            yield KeepAlive()

    # Generations ----------------------------------------------------------------------

    def _generate(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        mode: str,
        trace: str | None,
        seen_reply: Message | None = None,
    ) -> Iterator[Event] | None:
        reply_id = reply_id_for(user.id)
        if mode != "resume":
            seen_reply = conversation.get(reply_id)
        contents = self._contents(conversation, user)
        try:
            claim = self.store.begin(conversation, user, reply_id, mode, self.clock(), seen_reply)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", "the message could not be stored") from exc
        if claim is None:
            return None
        generation = Generation(reply_id, claim)
        with self._lock:
            old = self._active.get((*key, reply_id))
            self._active[(*key, reply_id)] = generation
        if old is not None:
            old.publish(Failed(REPLACED_TEXT))
        self._ensure_watchdog()
        generation.publish(Started(reply_id, self._metadata(claim.created_at, self.model.name)))
        worker = threading.Thread(
            target=self._work,
            args=(key, generation, self.prompts(key[1]), contents, trace),
            name=f"gen-{reply_id[:24]}",
            daemon=True,
        )
        worker.start()
        return generation.listen(self.keepalive_seconds)

    def _contents(self, conversation: Conversation, user: UserMessage) -> list[tuple[str, str]]:
        """Stored history before the user message, newest kept within the budget."""
        history: list[tuple[str, str]] = []
        for message in conversation.messages:
            if message.id == user.id:
                break
            if message.role == "user" and message.text.strip():
                history.append(("user", message.text))
            elif (
                message.role == "assistant"
                and message.text.strip()
                and message.status in ("complete", "streaming")
                and message.finish_reason != "content-filter"
            ):
                history.append(("model", message.text))
        budget = self.history_max_chars - len(user.text)
        kept: list[tuple[str, str]] = []
        for role, text in reversed(history):
            budget -= len(text)
            if budget < 0:
                break
            kept.append((role, text))
        kept.reverse()
        while kept and kept[0][0] != "user":
            kept.pop(0)
        return [*kept, ("user", user.text)]

    def _work(
        self,
        key: tuple[str, str],
        generation: Generation,
        system: str,
        contents: list[tuple[str, str]],
        trace: str | None,
    ) -> None:
        claim = generation.claim
        started = time.monotonic()
        first_token: float | None = None
        parts: list[str] = []
        size = 0
        usage: dict[str, int] | None = None
        model_name: str | None = self.model.name
        finish_reason = "stop"
        failure: Failed | None = None
        last_checkpoint = time.monotonic()
        try:
            for item in self.model.stream(system, contents):
                if isinstance(item, ModelDone):
                    finish_reason = item.finish_reason
                    usage = item.usage
                    model_name = item.model or model_name
                    if item.blocked and not parts:
                        parts.append(BLOCKED_TEXT)
                        generation.publish(TextDelta(BLOCKED_TEXT))
                    continue
                if not item.text:
                    continue
                if first_token is None:
                    first_token = time.monotonic() - started
                encoded = len(item.text.encode())
                if size + encoded > self.max_reply_bytes:
                    # Keep what still fits (whole characters), so the reply ends at the limit.
                    room = self.max_reply_bytes - size
                    head = item.text.encode()[:room].decode("utf-8", "ignore")
                    finish_reason = "length"
                    if head:
                        parts.append(head)
                        if not generation.publish(TextDelta(head)):
                            return
                    break
                size += encoded
                parts.append(item.text)
                if not generation.publish(TextDelta(item.text)):
                    return  # the watchdog or a newer generation settled this reply
                if time.monotonic() - last_checkpoint >= self.checkpoint_seconds:
                    claim.checkpoint("".join(parts))
                    last_checkpoint = time.monotonic()
        except LostClaim:
            generation.publish(Failed(REPLACED_TEXT))
            self._retire(key, generation)
            return
        except ModelUnavailable as exc:
            failure = Failed(BUSY_TEXT, status=503, retry_after=exc.retry_after)
        except ModelFailed:
            failure = Failed(CUT_TEXT)
        except StoreUnavailable:
            pass  # a checkpoint failed: the final write below retries and reports
        except Exception:  # a worker must always settle its reply
            log.error("generation failed unexpectedly", exc_info=True, extra={"trace": trace})
            failure = Failed(CUT_TEXT)
        if generation.done:
            return
        status = "error" if failure else "complete"
        if failure:
            finish_reason = "error"
        text = "".join(parts)
        self._settle(key, generation, text, status, finish_reason, usage, model_name, failure)
        log.info(
            "turn finished",
            extra={
                "trace": trace,
                "fields": {
                    "sessionId": key[0],
                    "stepId": key[1],
                    "replyId": generation.reply_id,
                    "model": model_name,
                    "status": status,
                    "finishReason": finish_reason,
                    "timeToFirstTokenMs": first_token and round(first_token * 1000),
                    "totalMs": round((time.monotonic() - started) * 1000),
                    "usage": usage,
                    "replyChars": len(text),
                },
            },
        )

    def _settle(
        self,
        key: tuple[str, str],
        generation: Generation,
        text: str,
        status: str,
        finish_reason: str,
        usage: dict[str, int] | None,
        model: str | None,
        failure: Failed | None,
    ) -> None:
        """Write the reply's final state, then tell listeners: they never see an unsaved end."""
        claim = generation.claim
        meta = self._metadata(claim.created_at, model, usage)
        saved: bool | None = None
        for attempt in range(4):
            try:
                claim.finish(text, status, finish_reason, usage, model)
                saved = True
                break
            except LostClaim:
                saved = False
                break
            except StoreUnavailable:
                time.sleep(0.25 * 2**attempt)
        if saved is None:
            log.error("reply could not be stored", extra={"fields": {"replyChars": len(text)}})
            generation.publish(Failed(SAVE_TEXT, metadata=meta))
        elif not saved:
            generation.publish(Failed(REPLACED_TEXT))
        elif failure:
            generation.publish(
                Failed(
                    failure.error_text,
                    status=failure.status,
                    metadata=meta,
                    retry_after=failure.retry_after,
                )
            )
        else:
            generation.publish(Finished(finish_reason, meta))
        self._retire(key, generation)

    def _retire(self, key: tuple[str, str], generation: Generation) -> None:
        with self._lock:
            if self._active.get((*key, generation.reply_id)) is generation:
                del self._active[(*key, generation.reply_id)]

    def _metadata(
        self, created_at: float, model: str | None, usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"createdAt": iso_time(created_at)}
        if model:
            meta["model"] = model
        if usage:
            meta["usage"] = usage
        return meta

    # Stalls and shutdown ----------------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        """One thread for the whole process ends replies whose upstream has gone silent."""
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="stall-watchdog", daemon=True
                )
                self._watchdog.start()

    def _watch(self) -> None:
        interval = min(1.0, self.stall_seconds / 4)
        while True:
            time.sleep(interval)
            now = time.monotonic()
            for key, generation in self._snapshot():
                if not generation.done and now - generation.last_activity > self.stall_seconds:
                    # The worker is stuck in a read it cannot be pulled out of: settle the
                    # reply here; the worker finds it closed when the read returns.
                    generation.last_activity = now
                    log.warning(
                        "gemini went silent: reply ended as an error",
                        extra={
                            "fields": {
                                "sessionId": key[0],
                                "stepId": key[1],
                                "replyId": generation.reply_id,
                                "status": "error",
                                "stallSeconds": self.stall_seconds,
                            }
                        },
                    )
                    self._pool.submit(
                        self._settle,
                        key,
                        generation,
                        generation.text(),
                        "error",
                        "error",
                        None,
                        self.model.name,
                        Failed(STALL_TEXT),
                    )

    def _snapshot(self) -> list[tuple[tuple[str, str], Generation]]:
        with self._lock:
            return [((k[0], k[1]), g) for k, g in self._active.items()]

    def checkpoint_all(self) -> int:
        """On SIGTERM: store the text of every reply in flight; they show as interrupted later."""
        count = 0
        for _, generation in self._snapshot():
            if generation.done:
                continue
            try:
                generation.claim.checkpoint(generation.text())
                count += 1
            except (LostClaim, StoreUnavailable):
                log.warning("checkpoint on shutdown failed", extra={"fields": {}})
        return count

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
