"""The words the chat core speaks: messages, turns, events, endings, and the texts users see.

Nothing here knows HTTP, Firestore or Gemini, so each adapter and a reply's life can be tested
against these values alone. Errors are in `errors.py`; what adapters must provide, in
`ports.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

# --- Vocabularies ---------------------------------------------------------------------------

Role = Literal["user", "assistant"]
# A stored reply's status; `interrupted` is only ever reported: a `streaming` reply whose lease
# lapsed, which anyone may take over. `queued`: stored while another reply in its step
# generates, made when its turn comes.
Status = Literal["queued", "streaming", "complete", "error", "stopped", "interrupted"]
# A reply not settled yet: generating, or waiting its turn. Each has a lease, and may lapse.
UNSETTLED: tuple[Status, ...] = ("queued", "streaming")
# The messages a turn may name as seen, and a session head names as changed lately: a step
# whose copy is further behind is asked for by number (a second round trip).
RECENT = 64
# The values every AI SDK client accepts in a `finish` chunk.
FinishReason = Literal["stop", "length", "content-filter", "tool-calls", "error", "other"]
# Why a reply failed: what the HTTP edge answers when it failed before any text.
Cause = Literal["model_error", "model_unavailable", "storage", "replaced"]
Trigger = Literal["submit-message", "regenerate-message"]
# Where a tool call stands, in the AI SDK's names for a tool part's state.
ToolState = Literal[
    "input-available", "output-available", "output-error", "approval-requested", "output-denied"
]
# How a turn claims its reply: both new, the user message edited, the reply generated again,
# or a reply that is missing, failed or lapsed answered again; or a reply that waited for the
# team's approval carried on. A message sent while its step is busy is stored with a reply
# that waits (`queue`; `queue` again adopts a waiting reply whose instance died), and that reply
# is claimed when its turn comes (`start`).
Mode = Literal["new", "edit", "regenerate", "resume", "continue", "queue", "start"]

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
class NewFile:
    """A file of the message being sent, checked and decoded; `index` is its place among the
    message's files. It becomes a `FileRef` once named for the bucket."""

    index: int
    media_type: str
    filename: str
    data: bytes = field(repr=False)
    sha256: str
    size: int


@dataclass(frozen=True)
class ToolCall:
    """One function call of a reply, as the model made it and as it came out.

    `at` is the length of the reply's text when the call came, `round` the model round that
    made it: together they place the call among the reply's text and steps.
    """

    call_id: str
    name: str
    input: Any
    round: int
    at: int
    state: ToolState = "input-available"
    output: Any = None
    error_text: str | None = None
    # Gemini's thought signature of the call: handed back with it, or later rounds are refused.
    signature: str | None = None
    # A call that needs the team's approval: the request's id, and the team's answer.
    approval_id: str | None = None
    approved: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Author:
    """Who wrote a user message: their uid, and the name the team knows them by ("": none)."""

    uid: str
    name: str = ""


@dataclass(frozen=True)
class UserMessage:
    id: str
    text: str
    files: tuple[FileRef, ...] = ()
    author: Author | None = None


@dataclass(frozen=True)
class Answer:
    """The team's answer to one request to run a tool (`addToolApprovalResponse`)."""

    approval_id: str
    approved: bool
    reason: str | None = None


@dataclass(frozen=True)
class Approval:
    """The answers to every request a reply is waiting on: the reply then carries on."""

    reply_id: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Turn:
    """One chat request: the new (or re-sent, or edited) user message and what to do with it."""

    session_id: str
    step_id: str
    user: UserMessage
    trigger: Trigger = "submit-message"
    target_id: str | None = None
    new_files: tuple[NewFile, ...] = ()  # the files the request carries, not yet stored
    approval: Approval | None = None  # the request answers an approval: `user` is unused
    seen: tuple[str, ...] = ()  # the ids of the messages the client holds before this one


@dataclass(frozen=True)
class Message:
    """A stored message as the domain sees it."""

    id: str
    role: Role
    text: str
    status: Status
    created_at: float
    updated_at: float
    reply_to: str | None = None
    finish_reason: FinishReason | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    # Which generation wrote a reply: the optimistic lock for regenerate, edit and takeover.
    generation: str | None = None
    # A `streaming` or `queued` reply whose instance stopped renewing its lease: anyone may
    # take it over.
    lapsed: bool = False
    # When the store last wrote it (its own clock): proves a follower saw the reply move.
    version: object = None
    # The model's thought summary and its grounding sources (replies only): shown to people,
    # never sent back to the model.
    reasoning: str = ""
    sources: tuple[Source, ...] = ()
    files: tuple[FileRef, ...] = ()  # user messages only
    # The reply's function calls, and the text offsets where each model round after the first
    # began (see `layout`).
    tools: tuple[ToolCall, ...] = ()
    steps: tuple[int, ...] = ()
    author: Author | None = None  # user messages only
    # Its place in the step's write order: what changed since a process last looked.
    seq: int = 0


@dataclass(frozen=True)
class Quota:
    """A user's turns in the current one-minute window, as stored; `version` is the store's
    handle on that state (None: nothing stored yet), so the count moves only from what was
    read."""

    window_start: float = 0.0
    count: int = 0
    version: object = None
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


# --- Events a reply emits; web/stream.py encodes them ----------------------------------------


@dataclass(frozen=True)
class Started:
    message_id: str
    metadata: dict[str, Any] | None = None
    # The reply carries on a message the client has: its step opens with the next round.
    continued: bool = False


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
    finish_reason: FinishReason
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """A reply that ended badly. `cause` tells the HTTP edge which error to answer when the
    reply failed before any text."""

    error_text: str
    finish_reason: FinishReason = "error"
    cause: Cause = "model_error"
    metadata: dict[str, Any] | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class ToolStarted:
    """The model called a tool: its input is known."""

    call: ToolCall


@dataclass(frozen=True)
class ToolDone:
    """A tool call's result (or its error) is known."""

    call: ToolCall


@dataclass(frozen=True)
class NextStep:
    """The model is asked again with the tools' results: a new step of the reply."""


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Waiting:
    """The reply waits for the step's earlier replies: `ahead` of them are not settled yet."""

    message_id: str
    ahead: int


Event = (
    Started
    | TextDelta
    | ReasoningDelta
    | Source
    | ToolStarted
    | ToolDone
    | NextStep
    | Finished
    | Failed
    | KeepAlive
    | Waiting
)


def layout(text: str, tools: tuple[ToolCall, ...], steps: tuple[int, ...]) -> list[Event]:
    """A reply's text, tool calls and step boundaries in the order they happened: a round's
    calls come after its text, and the next round's step after its calls."""
    marks: list[tuple[int, int, int, Event]] = []
    for call in tools:
        marks.append((call.at, call.round, 0, ToolStarted(call)))
        if call.state != "input-available":
            marks.append((call.at, call.round, 1, ToolDone(call)))
    for n, at in enumerate(steps):
        marks.append((at, n, 2, NextStep()))
    marks.sort(key=lambda m: m[:3])
    events: list[Event] = []
    done = 0
    for at, _, _, event in marks:
        at = min(at, len(text))
        if at > done:
            events.append(TextDelta(text[done:at]))
            done = at
        events.append(event)
    if done < len(text):
        events.append(TextDelta(text[done:]))
    return events


@dataclass(frozen=True)
class Content:
    """A reply's content at one moment: what a checkpoint or its final write stores."""

    text: str
    reasoning: str = ""
    sources: tuple[Source, ...] = ()
    tools: tuple[ToolCall, ...] = ()
    steps: tuple[int, ...] = ()


# --- How a reply ended: decided once, by `Reply.end` ---------------------------------------


@dataclass(frozen=True)
class Ending:
    """The one decision about a reply's end; the final write stores exactly this."""

    status: Literal["complete", "error", "stopped"]
    finish_reason: FinishReason
    usage: dict[str, int] | None = None
    model: str | None = None
    failure: Failed | None = None  # what listeners are told, for an `error` ending


@dataclass(frozen=True)
class Outcome:
    """One step's summary as the session remembers it (mirrored on the session document)."""

    step_id: str
    summary: str
    started_at: float  # the step's creation: orders steps outside the five known ones
    updated_at: float = 0.0
    through: int = 0  # the step's write number this summary covers up to
    cuts: int = 0  # the step's cuts when it was made (see `SummaryJob`)


@dataclass(frozen=True)
class SummaryJob:
    """One summary to make: the step's previous summary and the settled messages after it."""

    session_id: str
    step_id: str
    previous: str | None
    messages: list[Message]
    through: int  # the step's write number this summary covers up to
    cuts: int  # the step's cuts (edits, regenerates) it was made after
    started_at: float
    lease: object  # the store's handle on the lease it took for this job
    owner: str = ""  # whose budget pays for the call


# --- Safe texts: all a client ever learns about a failure -----------------------------------

BUSY_TEXT = "The assistant is busy right now. Please try again in a moment."
CUT_TEXT = "The reply was interrupted. Please try again."
STALL_TEXT = "The reply took too long and was stopped. Please try again."
SAVE_TEXT = "The reply could not be saved. Please try again."
BLOCKED_TEXT = "I can't help with that message. Please rephrase it."
REPLACED_TEXT = "This reply was replaced by a newer one."


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def metadata(
    created_at: float, model: str | None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """The message metadata a stream's `start` and `finish` carry."""
    meta: dict[str, Any] = {"createdAt": iso_time(created_at)}
    if model:
        meta["model"] = model
    if usage:
        meta["usage"] = usage
    return meta
