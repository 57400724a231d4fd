"""What a session's owner can do besides sending a turn: read a step's history, resume or stop
its reply in flight, fetch an attached file, see the session's outcomes, delete it all.

Each call reads the session as it is now and checks the caller against it first (someone
else's session is as missing as one that never was). Turns themselves are `turns.Turns`'s; the
replies in flight on this instance are asked of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from .board import BoardItem, Change, in_workshop_order
from .budget import Spend, utc_day
from .domain import Event, FileRef, Message, UserMessage
from .errors import Conflict, InvalidRequest, NotFound
from .generations import Stores, check_access
from .outcomes import workshop_place
from .ports import Board, Conversation, SessionView, StepSummary
from .team import (
    INVITE_SECONDS,
    Invite,
    Joined,
    Member,
    Role,
    code_hash,
    must_own,
    must_write,
    new_code,
)
from .turns import Turns


@dataclass(frozen=True)
class Page:
    """Some of a step's messages, oldest first, and the cursor to the ones before them."""

    messages: list[Message]
    next_before: str | None  # None: these are the oldest


class Sessions:
    def __init__(self, turns: Turns, stores: Stores) -> None:
        self.turns = turns
        self.store = stores.conversations
        self.sessions = stores.sessions
        self.attachments = stores.attachments
        self.budgets = stores.budgets
        self.board = stores.board

    def history(
        self, session_id: str, step_id: str, uid: str, limit: int, before: str | None = None
    ) -> Page:
        """The newest `limit` stored messages before the message `before` (all of them when
        None), oldest first, as they are now; a reply whose lease lapsed shows as
        interrupted."""
        conversation = self._open(session_id, step_id, uid)
        shown = [
            replace(m, status="interrupted") if m.lapsed else m
            for m in conversation.messages
            # A reply that failed before saying anything is not a message: the live client
            # never showed it, and an empty assistant turn breaks clients that replay history.
            if not (m.role == "assistant" and m.status == "error" and not m.text)
        ]
        end = len(shown)
        if before is not None:
            end = next((i for i, m in enumerate(shown) if m.id == before), -1)
            if end < 0:
                raise InvalidRequest("invalid_cursor", "before names no message of this step")
        start = max(0, end - limit)
        return Page(shown[start:end], shown[start].id if start > 0 else None)

    def resume(self, session_id: str, step_id: str, uid: str) -> Iterator[Event] | None:
        """The reply being generated in the step, from its beginning; None when there is none.

        On the generating instance it comes from memory; elsewhere it follows the checkpoints.
        """
        conversation = self._open(session_id, step_id, uid)
        events = self._latest(conversation)
        return None if events is None else self.turns.member_stream(events, conversation)

    def _latest(self, conversation: Conversation) -> Iterator[Event] | None:
        session_id, step_id, uid = conversation.session_id, conversation.step_id, conversation.uid
        local = self.turns.local(session_id, step_id)
        if local:
            return local[-1].listen(self.turns.settings.keepalive_seconds)
        live = [m for m in self.store.pending(session_id, step_id) if not m.lapsed]
        if not live:
            return None
        reply = live[-1]
        user = conversation.get(reply.reply_to or "")
        if user is None:  # the turn landed after the look: look again
            conversation = self._open(session_id, step_id, uid)
            user = conversation.get(reply.reply_to or "")
        if user is None:
            return None
        message = UserMessage(user.id, user.text, user.files)
        return self.turns.follow((session_id, step_id), conversation, message, reply)

    def stop(self, session_id: str, step_id: str, uid: str) -> int:
        """Stop the step's replies in flight and those waiting their turn, here or, through
        their documents, elsewhere. The messages stay."""
        must_write(self._open(session_id, step_id, uid).role)
        local = self.turns.local(session_id, step_id, claimed=False)
        stopped = [reply for reply in local if reply.stop()]
        for reply in stopped:  # answer once it is stored as stopped (or failed to be)
            reply.wait_closed(self.turns.settings.follow_seconds * 5 + 5)
        here = {reply.id for reply in local}
        live = [m for m in self.store.pending(session_id, step_id) if not m.lapsed]
        elsewhere = [m for m in live if m.id not in here]
        return len(stopped) + sum(
            self.store.request_stop(session_id, step_id, m.id) for m in elsewhere
        )

    def overview(self, session_id: str, uid: str) -> tuple[SessionView, list[StepSummary]]:
        """The session (its team and the caller's role in it), and its steps in workshop
        order, each with its outcome so far."""
        session = self._view(session_id, uid)
        return session, _in_workshop_order(session.steps)

    def delete(self, session_id: str, uid: str) -> int:
        """The whole session: it is marked as going (it reads as gone from then on), its
        replies in flight are stopped, then every file and document goes. Each step may be
        repeated, so a delete that failed half-way is finished by the owner's next one."""
        for _ in range(3):
            session = self._view(session_id, uid, deleting_too=True)
            must_own(session.role_of(uid))
            if self.sessions.mark_deleting(session, session_id):
                break
        else:
            raise NotFound("not_found", "no such session")  # it kept changing under us
        local = self.turns.local(session_id, claimed=False)
        for reply in local:
            reply.stop()
        for step_id in self.sessions.step_ids(session_id):
            for message in self.store.pending(session_id, step_id):
                if not message.lapsed:
                    self.store.request_stop(session_id, step_id, message.id)
        for reply in local:
            reply.wait_closed(5)
        if self.attachments is not None:
            # Before the documents, so none is left naming a deleted file, and the delete
            # can be tried again while the session document is there.
            self.attachments.forget_session(session_id)
        return self.sessions.delete_session(session_id)

    def file(
        self, session_id: str, step_id: str, message_id: str, n: int, uid: str
    ) -> tuple[bytes, FileRef]:
        """A stored file's bytes, for the owner of its session only."""
        conversation = self._open(session_id, step_id, uid)
        ref = _file_ref(conversation, message_id, n)
        data = self.attachments.read(ref) if ref and self.attachments else None
        if ref is None or data is None:
            raise NotFound("not_found", "no such file")
        return data, ref

    def usage(self, uid: str, now: float) -> Spend:
        """The caller's own tokens today, and whether the project may still spend."""
        if self.budgets is None:
            return Spend(utc_day(now))
        return self.budgets.read(uid, now)

    def _open(self, session_id: str, step_id: str, uid: str) -> Conversation:
        conversation = self.store.open(session_id, step_id, uid)
        if not conversation.session_exists:
            raise NotFound("not_found", "no such session")
        check_access(conversation)
        return conversation

    # The board -------------------------------------------------------------------------

    def board_items(self, session_id: str, uid: str) -> list[BoardItem]:
        """The session's board in workshop order: by step, then kind, then creation."""
        session = self._view(session_id, uid)
        order = {s.step_id: n for n, s in enumerate(_in_workshop_order(session.steps))}
        return in_workshop_order(self._board().items(session_id), order)

    def change_item(self, session_id: str, uid: str, change: Change) -> BoardItem:
        must_write(self._view(session_id, uid).role_of(uid))
        return self._board().change(session_id, change, uid, time.time())

    def remove_item(self, session_id: str, uid: str, item_id: str) -> None:
        must_write(self._view(session_id, uid).role_of(uid))
        if not self._board().remove(session_id, item_id):
            raise NotFound("item_not_found", "no board item with that id")

    # The team --------------------------------------------------------------------------

    def invite(self, session_id: str, uid: str, role: Joined, now: float) -> tuple[str, Invite]:
        """A new invite of the owner's: its code, shown this once, and what it grants."""
        must_own(self._view(session_id, uid).role_of(uid))
        code = new_code()
        invite = Invite(role, now + INVITE_SECONDS)
        self.sessions.add_invite(session_id, code_hash(code), invite, uid)
        return code, invite

    def revoke(self, session_id: str, uid: str, code: str) -> None:
        must_own(self._view(session_id, uid).role_of(uid))
        if not self.sessions.revoke_invite(session_id, code_hash(code)):
            raise NotFound("invite_not_found", "no such invite, or it has expired")

    def join(self, session_id: str, uid: str, code: str, name: str, now: float) -> Role:
        """Whoever holds a live code joins with its role; a wrong one is as missing as an
        expired one, and tells nothing about the session."""
        return self.sessions.join(session_id, code_hash(code), Member(uid, name, "member"), now)

    def remove(self, session_id: str, uid: str, member_uid: str) -> None:
        """The owner removes a member, or a member leaves."""
        session = self._view(session_id, uid)
        if member_uid != uid:
            must_own(session.role_of(uid))
        elif session.role_of(uid) == "owner":
            raise Conflict("owner_stays", "the owner cannot leave; delete the session instead")
        if not self.sessions.remove_member(session_id, member_uid):
            raise NotFound("member_not_found", "no such member")

    def _board(self) -> Board:
        if self.board is None:
            raise NotFound("not_found", "this deployment keeps no board")
        return self.board

    def _view(self, session_id: str, uid: str, deleting_too: bool = False) -> SessionView:
        """The session as it is now, if it is the caller's; a session half deleted still is,
        for its owner's next delete to finish."""
        session = self.sessions.view(session_id)
        if session.role_of(uid) is None or (session.deleting and not deleting_too):
            raise NotFound("not_found", "no such session")
        return session


def _in_workshop_order(steps: tuple[StepSummary, ...]) -> list[StepSummary]:
    return sorted(steps, key=lambda s: workshop_place(s.step_id, s.started_at))


def _file_ref(conversation: Conversation, message_id: str, n: int) -> FileRef | None:
    message = conversation.get(message_id)
    return next((f for f in (message.files if message else ()) if f.n == n), None)
