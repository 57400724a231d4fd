"""What a chat turn is: new, re-send, edit, regenerate, take-over or follow. Decisions only.

A reply's own life (its claim, text, listeners and end) is `reply.Reply`; the model stream
runs in the process's event loop (`generation.drive`); writes after the claim go through the
process's `Checkpointer`; a reply generated on another instance is relayed by `follow`. This
module picks which of those a request needs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from . import aio
from .approvals import carried
from .attachments import Attachments
from .board import TOOLS
from .checkpoints import Checkpointer
from .context import ContentCalls, ContentFiles, Contents, model_contents
from .domain import (
    REPLACED_TEXT,
    Author,
    Ending,
    Event,
    Failed,
    FileRef,
    KeepAlive,
    Message,
    Mode,
    NewFile,
    Turn,
    UserMessage,
    Waiting,
    reply_id_for,
)
from .errors import (
    ChatError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    StoreUnavailable,
    Unavailable,
)
from .follow import follow, replay
from .generation import Carry, Limits, Request, drive
from .outcomes import Workshop
from .ports import Board, Budgets, Claim, Conversation, Conversations, Model, Moved, Sessions
from .queue import Ports, Waiter, busy
from .reply import Reply
from .team import must_write, while_member
from .telemetry import QUIET, Telemetry
from .tools import Toolbox, board_context

log = logging.getLogger("workshop_chat.chat.turns")

_SEND_WAIT = 0.05  # seconds: never longer than it takes to build a request
_STEP_BUSY_RETRY = 10  # seconds: about one reply's time


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


def named(conversation: Conversation) -> bool:
    """Whether the model is told who wrote each message: when the session has a team."""
    return bool(conversation.names)


def superseded_files(conversation: Conversation, user: UserMessage) -> tuple[str, ...]:
    """The edited message's objects it no longer names: they go once the edit is stored."""
    stored = conversation.get(user.id)
    kept = {f.path for f in user.files}
    old: tuple[FileRef, ...] = stored.files if stored is not None else ()
    return tuple(f.path for f in old if f.path not in kept)


class Turns:
    """Runs chat turns. Its ports are injected, so tests hand in the emulator and the
    stand-in, or an in-memory store and a scripted model."""

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
        self.sessions = stores.sessions
        self.store = stores.conversations
        self.model = model
        self.workshop = workshop
        self.checkpointer = checkpointer
        self.settings = settings
        self.clock = clock
        self.telemetry = telemetry
        self._active: dict[tuple[str, str, str], Reply] = {}
        self._waiting: dict[tuple[str, str, str], Waiter] = {}
        self._lock = threading.Lock()

    # The entry points ------------------------------------------------------------------

    def run(
        self, turn: Turn, uid: str, trace: str | None = None, name: str = ""
    ) -> Iterator[Event]:
        """Claim or find the reply, then return its events. Raises before any event. `name`
        is the caller's as their token gives it; else the name they joined the team with."""
        limit = self.settings.rate_limit_per_minute
        uploaded: list[str] = []  # the objects this request wrote
        try:
            for _ in range(4):
                with self.store.session_lock(turn.session_id):
                    conversation = self.store.open(
                        turn.session_id, turn.step_id, uid, limit, budget=True
                    )
                    check_access(conversation, write=True)
                    author = Author(uid, name or conversation.names.get(uid, ""))
                    events = self._decide(turn, conversation, trace, uploaded, author)
                if events is not None:
                    if conversation.role == "owner" or not conversation.session_exists:
                        return events  # an owner (or the creator) is never removed
                    return self.member_stream(events, turn.session_id, uid)
                # Lost a race to a twin or to a newer turn: look again at what is stored.
        except NotFound:
            # The session went (or was never the caller's) while the files were uploaded: a
            # delete that listed its objects before they landed would leave them behind.
            if uploaded:
                self._attachments().forget((turn.session_id, turn.step_id), (), tuple(uploaded))
            raise
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

    def follow(
        self, key: tuple[str, str], conversation: Conversation, user: UserMessage, reply: Message
    ) -> Iterator[Event]:
        """Relay a reply generated elsewhere; take it over if its instance died."""

        def take_over(seen: Message) -> Iterator[Event] | None:
            if seen.status == "queued":  # its instance died while it waited
                waiter = self._adopt(key, conversation, seen)
                return None if waiter is None else self._listen(key, conversation, user, waiter)
            return self._generate(key, conversation, user, "resume", None, seen)

        every = self.settings.follow_seconds
        return follow(self.store, key, reply, take_over, self.model.name, every)

    def member_stream(self, events: Iterator[Event], session_id: str, uid: str) -> Iterator[Event]:
        """A member's or viewer's stream ends soon after they leave or are removed; what is
        generated goes on, and is stored, for the rest of the team."""

        def still_in() -> bool:
            return self.sessions.view(session_id).role_of(uid) is not None

        # About five follower looks: a second's worth of a reply's checkpoints, or five.
        every = self.settings.follow_seconds * 5
        return while_member(events, still_in, every, self.clock)

    def spend_minute(self, uid: str) -> None:
        """The user's refused requests used their minute up on this instance: their turns wait
        for the next minute on every instance (one write a minute at most, per instance)."""
        limit = self.settings.rate_limit_per_minute
        if not limit:
            return
        try:
            self.store.spend_minute(uid, self.clock(), limit)
        except StoreUnavailable:
            log.warning("a used-up minute could not be stored")

    def checkpoint_all(self) -> int:
        """On SIGTERM: store the text of every reply in flight now."""
        return self.checkpointer.flush(everything=True)

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    # Decisions -------------------------------------------------------------------------

    def _decide(
        self,
        turn: Turn,
        conversation: Conversation,
        trace: str | None,
        uploaded: list[str],
        author: Author,
    ) -> Iterator[Event] | None:
        user = replace(turn.user, author=author)
        key = (turn.session_id, turn.step_id)
        if turn.approval is not None:
            if self.board is None:
                raise Conflict(
                    "approval_not_pending", "that reply is not waiting for these answers"
                )
            user, carry = carried(conversation, approval := turn.approval)
            later = self._later(turn, author, trace, conversation, approval.reply_id)
            if later is not None:
                return later
            return self._generate(
                key, conversation, user, "continue", trace, carry.reply, carry=carry
            )
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
            later = self._later(turn, author, trace, conversation, reply_id_for(user.id))
            if later is not None:
                return later
            return self._generate(key, conversation, user, "regenerate", trace)
        existing = conversation.get(user.id)
        if existing is None:
            new = turn.new_files
            if busy(conversation.messages) or any(_orphaned(m) for m in conversation.messages):
                return self._enqueue(key, conversation, user, new, uploaded, trace)
            return self._generate(key, conversation, user, "new", trace, None, new, uploaded)
        if existing.role != "user":
            raise Conflict("id_in_use", "that message id belongs to another message")
        same_files = [f.sha256 for f in existing.files] == [f.sha256 for f in turn.new_files]
        if existing.text != user.text or not same_files:
            if turn.target_id != user.id:
                raise Conflict("id_in_use", "a different message with that id is stored")
            # Each edits their own; a message from before authors were kept, its owner.
            mine = existing.author.uid == author.uid if existing.author else None
            if mine is False or (mine is None and conversation.role != "owner"):
                raise Forbidden("forbidden", "you may edit only your own messages")
            later = self._later(turn, author, trace, conversation, reply_id_for(user.id))
            if later is not None:
                return later
            new = turn.new_files
            return self._generate(key, conversation, user, "edit", trace, None, new, uploaded)
        # A re-send: the stored message, with the files it already names.
        user = UserMessage(existing.id, existing.text, existing.files)
        return self._resend(key, conversation, user, trace)

    def _resend(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        trace: str | None,
    ) -> Iterator[Event] | None:
        """A re-sent message never starts a second generation of a live reply."""
        reply_id = reply_id_for(user.id)
        with self._lock:
            active = self._active.get((*key, reply_id))
            waiter = self._waiting.get((*key, reply_id))
        if active is not None:
            return self._join(active)
        if waiter is not None and not waiter.done:
            return self._listen(key, conversation, user, waiter)
        reply = self.store.reply(key[0], key[1], reply_id)
        if reply is not None and reply.status == "queued":
            return self.follow(key, conversation, user, reply)
        if reply is None or reply.status in ("error", "stopped") or reply.lapsed:
            # Nothing usable, or its instance died: answering it again is the retry.
            return self._generate(key, conversation, user, "resume", trace, reply)
        if reply.status == "streaming":
            return self.follow(key, conversation, user, reply)
        return iter(replay(reply))

    def _join(self, reply: Reply) -> Iterator[Event] | None:
        """An identical request on this instance: wait for its claim, then share its events."""
        if reply.wait_claim(self.settings.limits.stall_seconds):
            return reply.listen(self.settings.keepalive_seconds)
        return None

    # Generations -----------------------------------------------------------------------

    def _generate(
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
            return self._join(joined)
        upload_later = False
        try:
            if mode != "start":  # a waiting reply was counted when it was stored
                check_quota(
                    conversation, self.clock(), self.settings.session_rate_limit_per_minute
                )  # before anything is uploaded or asked
            if new:
                # Uploaded before the claim's commit names them: before the model is asked on
                # Vertex AI, which reads them; else while the model starts on its inline copy.
                attachments = self._attachments()
                user = UserMessage(user.id, user.text, attachments.name(key, user.id, new))
                upload_later = not attachments.model_reads_bucket
                if not upload_later:
                    self._upload(new, user.files, uploaded)
            superseded = superseded_files(conversation, user) if mode == "edit" else ()
            asked = model_contents(
                conversation.messages, user, self.settings.history_max_chars, named(conversation)
            )
            contents, files, calls = asked
            # The step's own turns take precedence; earlier steps' outcomes get what is left,
            # as data ahead of the conversation.
            room = self.settings.history_max_chars - sum(len(text) for _, text in contents)
            notes = self.workshop.notes(key[1], conversation, room)
            board = board_context(self.board, key[0], conversation, room - len(notes or ""))
            data = "\n\n".join(block for block in (notes, board) if block)
            if data:  # in the first turn's text: Gemini wants turns to alternate
                contents = [(contents[0][0], f"{data}\n\n{contents[0][1]}"), *contents[1:]]
            parts = self.attachments.for_model(files) if self.attachments else {}
        except BaseException:
            reply.abandon()
            raise
        system = self.workshop.system(key[1])
        where = {"sessionId": key[0], "stepId": key[1]}
        budget = self.workshop.thinking_budget(key[1])
        toolbox = self._toolbox(key, reply_id)
        request = Request(system, contents, budget, parts, calls, toolbox, carry)

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
        asked: tuple[Contents, ContentFiles, ContentCalls],
    ) -> Claim | None:
        """The claim's commit, beside the model call. When the session moved since it was read
        (another step's turn, a summary landing), the call stands as long as what it was asked
        is still the whole conversation: the claim is made again on what is stored now."""
        for _ in range(4):
            claim = self._begin(conversation, user, reply.id, mode, self.clock(), seen_reply)
            if not isinstance(claim, Moved):
                return claim
            conversation = claim.conversation
            check_access(conversation, write=True)
            check_quota(conversation, self.clock(), self.settings.session_rate_limit_per_minute)
            max_chars = self.settings.history_max_chars
            if model_contents(conversation.messages, user, max_chars, named(conversation)) != asked:
                return None  # a turn landed first: this one is asked again, with it in context
        return None

    # Turns in order (`queue.py`) -------------------------------------------------------

    def _enqueue(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        new: tuple[NewFile, ...],
        uploaded: list[str],
        trace: str | None,
    ) -> Iterator[Event] | None:
        """The step is busy: the message is stored now, in arrival order, with a reply that
        waits its turn here. Nothing is asked of the model until then."""
        waiting = [m for m in busy(conversation.messages) if m.status == "queued"]
        if len(waiting) >= self.settings.max_queued:
            raise RateLimited(
                "step_busy", "too many messages wait in this step; wait a moment", _STEP_BUSY_RETRY
            )
        check_quota(conversation, self.clock(), self.settings.session_rate_limit_per_minute)
        for other in conversation.messages:
            if _orphaned(other):
                self._adopt(key, conversation, other)
        if new:  # named by the stored message: uploaded first
            user = replace(user, files=self._attachments().name(key, user.id, new))
            self._upload(new, user.files, uploaded)
        reply_id = reply_id_for(user.id)
        # After every reply it waits for, whatever this instance's clock says: the order the
        # history shows is the order of the turns.
        last = max((m.created_at for m in conversation.messages), default=0.0)
        now = max(self.clock(), last + 0.002)
        claim = self._begin(conversation, user, reply_id, "queue", now, None)
        if claim is None or isinstance(claim, Moved):
            return None  # a twin won, or the step moved: decided again on what is stored now
        ahead = len(busy(conversation.messages))
        waiter = self._hold(key, reply_id, claim, conversation.uid, trace, ahead)
        return self._listen(key, conversation, user, waiter)

    def _hold(
        self,
        key: tuple[str, str],
        reply_id: str,
        claim: Claim,
        uid: str,
        trace: str | None,
        ahead: int,
    ) -> Waiter:
        """This process keeps the waiting reply's lease and starts it when its turn comes."""

        def adopt(seen: Message) -> None:
            self._adopt(key, self.store.open(key[0], key[1], uid), seen)

        def start(seen: Message) -> Reply | None:
            return self._start_waited(key, uid, seen, trace)

        ports = Ports(self.store, self.checkpointer.store, adopt, start, self.telemetry)
        every = self.settings.follow_seconds
        waiter = Waiter(key, reply_id, claim, ports, every, self.settings.lease_seconds)
        with self._lock:
            self._waiting = {k: w for k, w in self._waiting.items() if not w.done}
            self._waiting[(*key, reply_id)] = waiter
        waiter.begin(ahead)
        return waiter

    def _adopt(
        self, key: tuple[str, str], conversation: Conversation, seen: Message
    ) -> Waiter | None:
        """A waiting reply whose instance died: this process waits for it instead."""
        asked = conversation.get(seen.reply_to or "")
        if asked is None:
            return None
        user = UserMessage(asked.id, asked.text, asked.files, asked.author)
        claim = self._begin(conversation, user, seen.id, "queue", self.clock(), seen)
        if claim is None or isinstance(claim, Moved):
            return None  # adopted by another process first
        return self._hold(key, seen.id, claim, conversation.uid, None, 0)

    def _start_waited(
        self, key: tuple[str, str], uid: str, seen: Message, trace: str | None
    ) -> Reply | None:
        """Its turn came: claimed and generated with everything stored before it. A sender
        who has left the session since gets no reply (`queue.Waiter` stops it)."""
        conversation = self.store.open(key[0], key[1], uid)
        check_access(conversation, write=True)
        asked = conversation.get(seen.reply_to or "")
        if asked is None:
            return None
        user = UserMessage(asked.id, asked.text, asked.files, asked.author)
        if self._generate(key, conversation, user, "start", trace, seen) is None:
            return None
        with self._lock:
            return self._active.get((*key, seen.id))

    def _listen(
        self, key: tuple[str, str], conversation: Conversation, user: UserMessage, waiter: Waiter
    ) -> Iterator[Event]:
        def follow(stored: Message) -> Iterator[Event]:
            return self.follow(key, conversation, user, stored)

        return waiter.listen(self.settings.keepalive_seconds, follow)

    def _later(
        self,
        turn: Turn,
        author: Author,
        trace: str | None,
        conversation: Conversation,
        reply_id: str,
    ) -> Iterator[Event] | None:
        """A regenerate, an edit or an approval's answer while other replies in the step
        generate or wait: the request waits until they settle (nothing is stored meanwhile,
        so a sender who goes takes the request with them), then the turn is decided again.
        None: the step is free."""
        ahead = len(busy(conversation.messages, but=reply_id))
        if not ahead:
            return None
        return self._wait_then_run(turn, author, trace, reply_id, ahead)

    def _wait_then_run(
        self, turn: Turn, author: Author, trace: str | None, reply_id: str, ahead: int
    ) -> Iterator[Event]:
        key = (turn.session_id, turn.step_id)
        yield Waiting(reply_id, ahead)
        pinged = self.clock()
        while ahead:
            time.sleep(self.settings.follow_seconds)
            try:
                now_ahead = len(busy(self.store.pending(*key), but=reply_id))
            except StoreUnavailable:
                now_ahead = ahead
            if now_ahead != ahead and now_ahead:
                yield Waiting(reply_id, now_ahead)
            elif self.clock() - pinged >= self.settings.keepalive_seconds:
                pinged = self.clock()
                yield KeepAlive()
            ahead = now_ahead
        try:
            events = self.run(turn, author.uid, trace, author.name)
        except ChatError as error:
            yield Failed(error.message)
            return
        yield from events

    def _begin(
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
        self._attachments().upload(new, named)

    def _toolbox(self, key: tuple[str, str], reply_id: str) -> Toolbox | None:
        """The board's tools, where the deployment keeps a board."""
        if self.board is None:
            return None
        allowed = self.workshop.tool_names(key[1])
        specs = tuple(s for name, s in TOOLS.items() if allowed is None or name in allowed)
        return Toolbox(self.board, key[0], key[1], reply_id, self.clock, specs, self.telemetry)

    def _attachments(self) -> Attachments:
        if self.attachments is None:
            raise InvalidRequest("files_unsupported", "this deployment takes no files")
        return self.attachments

    def waiting(self, session_id: str, step_id: str) -> list[Waiter]:
        """This process's replies waiting their turn in the step."""
        with self._lock:
            return [w for (s, t, _), w in self._waiting.items() if (s, t) == (session_id, step_id)]

    def _settled(self, slot: tuple[str, str, str], reply: Reply) -> None:
        """The last step of a reply's end: this process forgets it, and its step's outcome is
        refreshed when the step's history grew."""
        with self._lock:
            if self._active.get(slot) is reply:
                del self._active[slot]
        if reply.worth_summarizing:
            self.workshop.after_reply(slot[0], slot[1], reply.trace)


def _orphaned(message: Message) -> bool:
    """A reply stored to wait its turn whose instance died: the next turn adopts it."""
    return message.status == "queued" and message.lapsed
