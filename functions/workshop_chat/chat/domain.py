"""The words every module shares: messages, events, endings, errors and the texts users see.

Nothing here knows HTTP, Firestore or Gemini, so each adapter and the reply's lifecycle can be
tested against these values alone. HTTP statuses live in `http.py`, the one place that maps
domain errors to responses.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

# --- Values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRef:
    """A file of a user message as Firestore keeps it: a reference, never the bytes."""

    n: int  # its number within the message, and the last segment of its object path
    media_type: str
    filename: str
    size: int
    sha256: str
    path: str  # the Cloud Storage object


@dataclass(frozen=True)
class UserMessage:
    id: str
    text: str
    files: tuple[Any, ...] = ()  # file_parts.FilePart: the new message's checked files


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
    # Which generation wrote a reply: the optimistic lock for regenerate, edit and takeover.
    generation: str | None = None
    # A `streaming` reply whose instance stopped renewing its lease: anyone may take it over.
    lapsed: bool = False
    # When the store last wrote it (its own clock): proves a follower saw the reply move.
    version: Any = None
    # The model's thought summary and its grounding sources (replies only): shown to people,
    # never sent back to the model.
    reasoning: str = ""
    sources: tuple[Source, ...] = ()
    files: tuple[FileRef, ...] = ()  # user messages only
    # Its place in the step's write order (see history_cache): what changed since a look.
    seq: int = 0


@dataclass(frozen=True)
class Quota:
    """A user's turns in the current one-minute window, as stored; `version` is the store's
    handle on that state (None: nothing stored yet), so the count moves only from what was
    read."""

    window_start: float = 0.0
    count: int = 0
    version: Any = None
    per_minute: int = 0  # the limit it is held to (0: none)

    def wait(self, now: float) -> int | None:
        """Seconds until the window opens again, or None if a turn may go now."""
        if not self.per_minute or now - self.window_start >= 60.0:
            return None
        if self.count < self.per_minute:
            return None
        return max(1, int(self.window_start + 60.0 - now + 0.999))

    def after_turn(self, now: float) -> Quota:
        """The state once this turn is counted."""
        if now - self.window_start >= 60.0:
            return replace(self, window_start=now, count=1)
        return replace(self, count=self.count + 1)


def reply_id_for(user_message_id: str) -> str:
    """Derived, so a re-sent user message lands on the same reply document."""
    return f"{user_message_id}~reply"


# --- Events a reply emits; protocol.py encodes them ----------------------------------------


@dataclass(frozen=True)
class Started:
    message_id: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's thought summary: streamed before the answer, stored apart."""

    text: str


@dataclass(frozen=True)
class Source:
    """A web source the answer was grounded on (Google Search), kept as Gemini gave it."""

    source_id: str
    url: str
    title: str | None = None


@dataclass(frozen=True)
class Finished:
    finish_reason: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """A reply that ended badly. `cause` tells http.py which error to answer before the stream."""

    error_text: str
    finish_reason: str = "error"
    cause: str = "model_error"  # model_error | model_unavailable | storage | replaced
    metadata: dict[str, Any] | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class KeepAlive:
    pass


Event = Started | TextDelta | ReasoningDelta | Source | Finished | Failed | KeepAlive


# --- How a reply ended: decided once, by `Reply.end` ---------------------------------------


@dataclass(frozen=True)
class Ending:
    """The one decision about a reply's end; the final write stores exactly this."""

    status: str  # complete | error | stopped
    finish_reason: str  # stop | length | content-filter | error | other
    usage: dict[str, int] | None = None
    model: str | None = None
    failure: Failed | None = None  # what listeners are told, for an `error` ending


# --- Domain errors (http.py maps each class to a status) -----------------------------------


class ChatError(Exception):
    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(ChatError): ...


class Unauthorized(ChatError): ...


class NotFound(ChatError): ...


class Conflict(ChatError): ...


class TooLarge(ChatError): ...


class RateLimited(ChatError): ...


class MethodNotAllowed(ChatError): ...


class UnsupportedMedia(ChatError): ...


class UpstreamFailed(ChatError): ...


class Unavailable(ChatError): ...


@dataclass(frozen=True)
class Moved:
    """A claim found the session moved since it was read (its precondition failed): what is
    stored now, for the caller to judge whether the model call it made still stands."""

    conversation: Any


# --- What adapters raise -------------------------------------------------------------------


class LostClaim(Exception):
    """Another generation took this reply over (regenerate, edit, takeover): stop writing it."""


class StoreUnavailable(Exception):
    """Firestore could not be reached or refused the write."""


class StaleCache(Exception):
    """A write's precondition on what this instance remembered failed: reload and decide again."""


class ModelUnavailable(Exception):
    """Gemini refused before the first byte, after our retries (429/5xx)."""

    def __init__(self, retry_after: int | None = None) -> None:
        super().__init__("model unavailable")
        self.retry_after = retry_after


class ModelFailed(Exception):
    """Gemini failed after the stream began, or answered something we cannot use."""


# --- What the model adapter yields ---------------------------------------------------------


@dataclass(frozen=True)
class ModelText:
    text: str


@dataclass(frozen=True)
class ModelThought:
    text: str


@dataclass(frozen=True)
class ModelSource:
    url: str
    title: str | None = None


@dataclass(frozen=True)
class ModelDone:
    finish_reason: str
    usage: dict[str, int] | None = None
    model: str | None = None
    blocked: bool = False


class Model(Protocol):
    name: str

    def stream(
        self,
        system: str,
        contents: list[tuple[str, str]],
        thinking_budget: int | None = None,
        files: dict[int, list[dict[str, Any]]] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> AsyncIterator[ModelText | ModelThought | ModelSource | ModelDone]:
        """`on_sent` is called once the request is on its way (each attempt): until then the
        caller holds back work that would compete with building it."""


# --- Safe texts: all a client ever learns about a failure -----------------------------------

BUSY_TEXT = "The assistant is busy right now. Please try again in a moment."
CUT_TEXT = "The reply was interrupted. Please try again."
STALL_TEXT = "The reply took too long and was stopped. Please try again."
SAVE_TEXT = "The reply could not be saved. Please try again."
BLOCKED_TEXT = "I can't help with that message. Please rephrase it."
REPLACED_TEXT = "This reply was replaced by a newer one."


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def metadata(created_at: float, model: str | None, usage: dict[str, int] | None = None) -> dict:
    """The message metadata a stream's `start` and `finish` carry."""
    meta: dict[str, Any] = {"createdAt": iso_time(created_at)}
    if model:
        meta["model"] = model
    if usage:
        meta["usage"] = usage
    return meta
