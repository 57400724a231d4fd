"""What the core needs from the world, as protocols: the adapters in `firestore/` and `cloud/`
implement them, the assembly (`service.py`) wires them in, and the unit tests hand in fakes
that keep the same rules (`tests/fakes.py`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from .board import BoardItem, Change, ToolSpec
from .budget import Spend
from .domain import (
    Content,
    Ending,
    FinishReason,
    Message,
    Mode,
    Outcome,
    Quota,
    SummaryJob,
    ToolCall,
    UserMessage,
)
from .team import Invite, Member, Role, role_in

# --- A step's conversation and the claims on its replies -----------------------------------


class Conversation(Protocol):
    """One step's history as one look at its session found it, oldest first."""

    @property
    def session_id(self) -> str: ...

    @property
    def step_id(self) -> str: ...

    @property
    def uid(self) -> str:
        """Whose look it is: the caller's."""

    @property
    def session_exists(self) -> bool: ...

    @property
    def role(self) -> Role | None:
        """The caller's place in the session; None: not theirs (or no session yet)."""

    @property
    def deleting(self) -> bool: ...

    @property
    def messages(self) -> list[Message]: ...

    @property
    def outcomes(self) -> Mapping[str, Outcome]:
        """What the session's steps found, by step id."""

    @property
    def names(self) -> Mapping[str, str]:
        """The team's members and viewers (not the owner), with the names they joined with:
        empty for a session of one."""

    @property
    def board_version(self) -> str:
        """Moves with every write to the session's board ("": it never had one)."""

    @property
    def quota(self) -> Quota | None:
        """The caller's turns this minute, when a rate limit applies."""

    @property
    def session_turns(self) -> Quota:
        """The session's turns in the current minute, whoever sent them (`per_minute` unset:
        the core holds them to its bound)."""

    @property
    def spend(self) -> Spend | None:
        """The caller's and the project's tokens today, when read for a turn."""

    def get(self, message_id: str) -> Message | None: ...


class Claim(Protocol):
    """The store's handle on a claimed reply; its writes carry a precondition."""

    @property
    def created_at(self) -> float: ...

    @property
    def removed(self) -> tuple[str, ...]:
        """Messages an edit or regenerate deleted (their files go too)."""

    @property
    def epoch(self) -> str:
        """The generation that began the reply's content: the same after a takeover or an
        approval's answer, a new one after a regenerate or an edit."""


@dataclass(frozen=True)
class Moved:
    """A claim found the session moved since it was read (its precondition failed): what is
    stored now, for the caller to judge whether the model call it made still stands."""

    conversation: Conversation


class Conversations(Protocol):
    def open(
        self,
        session_id: str,
        step_id: str,
        uid: str,
        quota: int = 0,
        budget: bool = False,
        seen: Sequence[str] = (),
    ) -> Conversation:
        """The session as it is now and the step's history (with the caller's rate-limit
        state, held to `quota` turns a minute, when set, and their token spend today when
        `budget`). Someone else's session comes back with no role and no messages. `seen`:
        the ids of messages the client says it holds, a hint at what may have changed."""

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: Mode,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | Moved | None:
        """Store the user message and claim its reply: a claim, None when a racing request
        won, or `Moved` with what is stored now."""

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None: ...

    def pending(self, session_id: str, step_id: str) -> list[Message]:
        """The step's replies being generated now or waiting their turn (or whose instance
        died: `lapsed`), oldest first."""

    def request_stop(self, session_id: str, step_id: str, reply_id: str) -> bool: ...

    def session_lock(self, session_id: str) -> AbstractContextManager[Any]:
        """Held from reading a session's state to committing a claim on it."""

    def spend_minute(self, uid: str, now: float, per_minute: int) -> None:
        """Store the user's minute as used up from `now`."""


# --- What a claimed reply writes -----------------------------------------------------------


class WriteOutcome(Enum):
    """What a reply's write came to."""

    WROTE = "wrote"  # stored
    LOST = "lost"  # another generation owns the reply now
    UNSTORED = "unstored"  # not stored; the next write tries again
    STOP = "stop"  # (a checkpoint) someone asked the reply to stop


@dataclass(frozen=True)
class ReplyWrite:
    """One reply's write: its content (None renews the lease only), and its end if final."""

    claim: Claim
    content: Content | None
    ending: Ending | None = None


class ReplyStore(Protocol):
    def write_replies(self, writes: list[ReplyWrite]) -> list[WriteOutcome]:
        """One outcome per write, in order, for many replies in one round trip."""


# --- Whole sessions ------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSummary:
    """A step as the session overview shows it."""

    step_id: str
    summary: str | None
    summary_updated_at: float | None
    message_count: int
    updated_at: float
    started_at: float


@dataclass(frozen=True)
class SessionView:
    """A session as it is now: whose it is, whether it is going, and its steps."""

    exists: bool
    owner: str | None = None
    deleting: bool = False
    steps: tuple[StepSummary, ...] = ()
    version: object = None  # the store's handle on this state
    members: tuple[Member, ...] = ()  # everyone but the owner

    def role_of(self, uid: str) -> Role | None:
        return role_in(self.owner, self.members, uid) if self.exists else None


class Sessions(Protocol):
    def view(self, session_id: str) -> SessionView: ...

    def mark_deleting(self, session: SessionView, session_id: str) -> bool:
        """False when the session changed since `session` was read."""

    def step_ids(self, session_id: str) -> list[str]: ...

    def delete_session(self, session_id: str) -> int:
        """Every document of the session, the session's own last; how many went."""

    def add_invite(self, session_id: str, code_hash: str, invite: Invite, by: str) -> None: ...

    def revoke_invite(self, session_id: str, code_hash: str) -> bool:
        """False when there was no such invite."""

    def join(self, session_id: str, code_hash: str, member: Member, now: float) -> Role:
        """Add the caller with the invite's role (one already in keeps theirs): `NotFound`
        for a code that names no live invite, `Conflict` for a full team."""

    def remove_member(self, session_id: str, uid: str) -> bool:
        """False when they were not a member."""


# --- Step outcomes -------------------------------------------------------------------------


class SummaryStore(Protocol):
    def summary_job(
        self, session_id: str, step_id: str, quiet: float, max_wait: float
    ) -> SummaryJob | float | None:
        """The next summary to make, with its lease taken; seconds to wait; or nothing."""

    def save_summary(self, job: SummaryJob, summary: str | None, tokens: int = 0) -> None:
        """Store the summary and give the lease back (None: only give it back), charging the
        call's `tokens` to the session's owner."""


Summarize = Callable[[str, str, int], Awaitable[tuple[str, dict[str, int] | None]]]


class Budgets(Protocol):
    def read(self, uid: str, now: float) -> Spend:
        """What the caller and the project have spent today, against their limits."""


# --- File bytes ----------------------------------------------------------------------------


class Bucket(Protocol):
    """Objects by path. Every failure to reach it is `StoreUnavailable`."""

    def put(self, path: str, data: bytes, media_type: str, sha256: str | None = None) -> bool: ...

    def get(self, path: str, sha256: str | None = None) -> tuple[bytes, str] | None: ...

    def delete(self, path: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...


# --- The workshop board -------------------------------------------------------------------


class Board(Protocol):
    """A session's board items. Every failure to reach the store is `StoreUnavailable`."""

    def items(self, session_id: str, version: str | None = None) -> list[BoardItem]:
        """The session's items; with `version` (the session's `board_version`), they may come
        from a copy taken at that version."""

    def add(self, session_id: str, items: list[BoardItem]) -> None:
        """Create each item unless its id is stored already (a retried call added it);
        `BoardError` when the board would hold more than `MAX_BOARD_ITEMS`."""

    def change(self, session_id: str, change: Change, by: str, now: float) -> BoardItem:
        """The item as changed; `NotFound` when there is no such item."""

    def remove(self, session_id: str, item_id: str) -> bool:
        """False when there was no such item."""


# --- The model -----------------------------------------------------------------------------


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
class ModelToolCall:
    """A function call of the model's; `signature` is Gemini's thought signature of it, as
    base64 text, to be handed back with the call."""

    name: str
    args: Any
    signature: str | None = None


@dataclass(frozen=True)
class ModelDone:
    finish_reason: FinishReason
    usage: dict[str, int] | None = None
    model: str | None = None
    blocked: bool = False


ModelItem = ModelText | ModelThought | ModelSource | ModelToolCall | ModelDone
# Gemini parts (inline data, file data, notes) for the files of contents[i].
FileParts = dict[int, list[dict[str, Any]]]


class Model(Protocol):
    name: str

    def stream(
        self,
        system: str,
        contents: list[tuple[str, str]],
        thinking_budget: int | None = None,
        files: FileParts | None = None,
        on_sent: Callable[[], None] | None = None,
        *,
        tools: tuple[ToolSpec, ...] = (),
        calls: Mapping[int, tuple[ToolCall, ...]] | None = None,
    ) -> AsyncGenerator[ModelItem, None]:
        """`on_sent` is called once the request is on its way (each attempt): until then the
        caller holds back work that would compete with building it. `tools` are declared to
        the model; `calls[i]` are the function calls a model content made, or the results a
        user content gives back. Raises `ModelUnavailable` before the first item,
        `ModelFailed` after it."""

    async def summarize(
        self, system: str, prompt: str, max_chars: int
    ) -> tuple[str, dict[str, int] | None]: ...
