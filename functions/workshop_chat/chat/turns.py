"""What a chat turn is: new, re-send, edit, regenerate, take-over or follow. Decisions only.

A reply's own life (its claim, text, listeners and end) is `reply.Reply`; this process's
replies are launched and tracked by `generations.Generations`; the model stream runs in the
process's event loop (`generation.drive`); writes after the claim go through the process's
`Checkpointer`; a reply generated on another instance is relayed by `follow`; a turn sent while
its step is busy takes its place in `line.Line`. This module picks which of those a request
needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

from .approvals import carried
from .domain import (
    Author,
    Event,
    Message,
    Turn,
    UserMessage,
    reply_id_for,
)
from .errors import (
    Conflict,
    Forbidden,
    NotFound,
    StoreUnavailable,
    Unavailable,
)
from .follow import follow, replay
from .generations import Generations, check_access
from .line import Line
from .ports import Conversation, Sessions
from .queue import busy, orphaned
from .reply import Reply
from .team import while_member

log = logging.getLogger("workshop_chat.chat.turns")


class Turns:
    """Runs chat turns over this process's `Generations` (whose ports are injected, so tests
    hand in the emulator and the stand-in, or an in-memory store and a scripted model) and
    the sessions they belong to."""

    def __init__(self, generations: Generations, sessions: Sessions) -> None:
        self.generations = generations
        self.sessions = sessions
        self.attachments = generations.attachments
        self.board = generations.board
        self.store = generations.store
        self.model = generations.model
        self.checkpointer = generations.checkpointer
        self.settings = generations.settings
        self.telemetry = generations.telemetry
        self.line = Line(generations, self.follow, self.run)

    def clock(self) -> float:
        """Now, as this process's replies tell the time (tests set theirs)."""
        return self.generations.clock()

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
                        turn.session_id, turn.step_id, uid, limit, budget=True, seen=turn.seen
                    )
                    check_access(conversation, write=True)
                    author = Author(uid, name or conversation.names.get(uid, ""))
                    events = self._decide(turn, conversation, trace, uploaded, author)
                if events is not None:
                    return self.member_stream(events, conversation)
                # Lost a race to a twin or to a newer turn: look again at what is stored.
        except NotFound:
            # The session went (or was never the caller's) while the files were uploaded: a
            # delete that listed its objects before they landed would leave them behind.
            if uploaded:
                attachments = self.generations.attachments_or_refuse()
                attachments.forget((turn.session_id, turn.step_id), (), tuple(uploaded))
            raise
        raise Unavailable("busy", "the conversation is busy; try again")

    def local(
        self, session_id: str, step_id: str | None = None, claimed: bool = True
    ) -> list[Reply]:
        """This instance's replies in the step, or in the whole session (a stop also takes one
        still claiming)."""
        return self.generations.local(session_id, step_id, claimed)

    def follow(
        self, key: tuple[str, str], conversation: Conversation, user: UserMessage, reply: Message
    ) -> Iterator[Event]:
        """Relay a reply generated elsewhere; take it over if its instance died."""

        def take_over(seen: Message) -> Iterator[Event] | None:
            if seen.status == "queued":  # its instance died while it waited
                waiter = self.line.adopt(key, conversation, seen)
                if waiter is None:
                    return None
                return self.line.listen(key, conversation, user, waiter)
            return self.generations.generate(key, conversation, user, "resume", None, seen)

        every = self.settings.follow_seconds
        return follow(self.store, key, reply, take_over, self.model.name, every)

    def member_stream(self, events: Iterator[Event], conversation: Conversation) -> Iterator[Event]:
        """A member's or viewer's stream ends soon after they leave or are removed; what is
        generated goes on, and is stored, for the rest of the team. An owner (or whoever
        creates the session with this turn) is never removed: theirs is looked at never."""
        if conversation.role == "owner" or not conversation.session_exists:
            return events
        session_id, uid = conversation.session_id, conversation.uid

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
            later = self.line.later(turn, author, trace, conversation, approval.reply_id)
            if later is not None:
                return later
            return self.generations.generate(
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
            later = self.line.later(turn, author, trace, conversation, reply_id_for(user.id))
            if later is not None:
                return later
            return self.generations.generate(key, conversation, user, "regenerate", trace)
        existing = conversation.get(user.id)
        if existing is None:
            new = turn.new_files
            if busy(conversation.messages) or any(orphaned(m) for m in conversation.messages):
                return self.line.enqueue(key, conversation, user, new, uploaded, trace)
            return self.generations.generate(
                key, conversation, user, "new", trace, None, new, uploaded
            )
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
            later = self.line.later(turn, author, trace, conversation, reply_id_for(user.id))
            if later is not None:
                return later
            new = turn.new_files
            return self.generations.generate(
                key, conversation, user, "edit", trace, None, new, uploaded
            )
        # A re-send: the stored message, with the files it already names.
        user = UserMessage(existing.id, existing.text, existing.files)
        return self._resend(turn, conversation, user, trace, author)

    def _resend(
        self,
        turn: Turn,
        conversation: Conversation,
        user: UserMessage,
        trace: str | None,
        author: Author,
    ) -> Iterator[Event] | None:
        """A re-sent message never starts a second generation of a live reply; answering a
        failed one again waits its turn like a regenerate."""
        key = (turn.session_id, turn.step_id)
        reply_id = reply_id_for(user.id)
        active = self.generations.active((*key, reply_id))
        if active is not None:
            return self.generations.join(active)
        waiter = self.line.waiter((*key, reply_id))
        if waiter is not None:
            return self.line.listen(key, conversation, user, waiter)
        reply = self.store.reply(key[0], key[1], reply_id)
        if reply is not None and reply.status == "queued":
            return self.follow(key, conversation, user, reply)
        if reply is None or reply.status in ("error", "stopped") or reply.lapsed:
            # Nothing usable, or its instance died: answering it again is the retry.
            later = self.line.later(turn, author, trace, conversation, reply_id)
            if later is not None:
                return later
            return self.generations.generate(key, conversation, user, "resume", trace, reply)
        if reply.status == "streaming":
            return self.follow(key, conversation, user, reply)
        return iter(replay(reply))
