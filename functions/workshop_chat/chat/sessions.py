"""What a session's owner can do besides sending a turn: read a step's history, resume or stop
its reply in flight, fetch an attached file, see the session's outcomes, delete it all.

Each call checks ownership first (someone else's session is as missing as one that never
was). Turns themselves are `turn.Chat`'s; the replies in flight on this instance are asked of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from .domain import Event, FileRef, Message, NotFound, StoreUnavailable, Unavailable, UserMessage
from .outcomes import workshop_place
from .turns import UNAVAILABLE, Chat, Stores


class SessionOps:
    def __init__(self, chat: Chat, stores: Stores) -> None:
        self.chat = chat
        self.store = stores.conversations
        self.sessions = stores.sessions
        self.attachments = stores.attachments

    def history(self, session_id: str, step_id: str, uid: str) -> list[Message]:
        """The stored messages as they are now; a reply whose lease lapsed shows as
        interrupted."""
        try:
            conversation = self.store.open(session_id, step_id, uid)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
        if not conversation.session_exists:
            raise NotFound("not_found", "no such session")
        return [
            replace(m, status="interrupted") if m.lapsed else m
            for m in conversation.messages
            # A reply that failed before saying anything is not a message: the live client
            # never showed it, and an empty assistant turn breaks clients that replay history.
            if not (m.role == "assistant" and m.status == "error" and not m.text)
        ]

    def resume(self, session_id: str, step_id: str, uid: str) -> Iterator[Event] | None:
        """The reply being generated in the step, from its beginning; None when there is none.

        On the generating instance it comes from memory; elsewhere it follows the checkpoints.
        """
        try:
            conversation = self._owned(session_id, step_id, uid)
            local = self.chat.local(session_id, step_id)
            if local:
                return local[-1].listen(self.chat.settings.keepalive_seconds)
            live = [m for m in self.store.streaming(session_id, step_id) if not m.lapsed]
            if not live:
                return None
            reply = live[-1]
            user = conversation.get(reply.reply_to or "")
            if user is None:  # this instance's copy predates the turn: read it
                conversation = self.store.open(session_id, step_id, uid)
                user = conversation.get(reply.reply_to or "")
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
        if user is None:
            return None
        message = UserMessage(user.id, user.text, user.files)
        return self.chat.follow((session_id, step_id), conversation, message, reply, None)

    def stop(self, session_id: str, step_id: str, uid: str) -> int:
        """Stop the step's replies in flight, here or, through their documents, elsewhere."""
        try:
            self._owned(session_id, step_id, uid)
            local = self.chat.local(session_id, step_id, claimed=False)
            if local:
                stopped = [reply for reply in local if reply.stop()]
                for reply in stopped:  # answer once it is stored as stopped (or failed to be)
                    reply.wait_closed(self.chat.settings.follow_seconds * 5 + 5)
                return len(stopped)
            live = [m for m in self.store.streaming(session_id, step_id) if not m.lapsed]
            return sum(self.store.request_stop(session_id, step_id, m.id) for m in live)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc

    def overview(self, session_id: str, uid: str) -> list[dict[str, Any]]:
        """The session's steps in workshop order, each with its outcome so far."""
        try:
            steps = self.sessions.overview(session_id, uid)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
        return sorted(steps, key=lambda s: workshop_place(s["stepId"], s["startedAt"]))

    def delete(self, session_id: str, uid: str) -> int:
        """The whole session: it is marked as going (it reads as gone from then on), its
        replies in flight are stopped, then every file and document goes. Each step may be
        repeated, so a delete that failed half-way is finished by the owner's next one."""
        try:
            self.sessions.mark_deleting(session_id, uid)  # the owner's: else 404
            local = self.chat.local(session_id, claimed=False)
            for reply in local:
                reply.stop()
            for step_id in self.sessions.step_ids(session_id):
                for reply in self.store.streaming(session_id, step_id):
                    if not reply.lapsed:
                        self.store.request_stop(session_id, step_id, reply.id)
            for reply in local:
                reply.wait_closed(5)
            if self.attachments is not None:
                # Before the documents, so none is left naming a deleted file, and the delete
                # can be tried again while the session document is there.
                self.attachments.forget_session(session_id)
            return self.sessions.delete_session(session_id, uid)
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc

    def file(
        self, session_id: str, step_id: str, message_id: str, n: int, uid: str
    ) -> tuple[bytes, FileRef]:
        """A stored file's bytes, for the owner of its session only."""
        try:
            conversation = self._owned(session_id, step_id, uid)
            ref = _file_ref(conversation, message_id, n)
            if ref is None:  # this instance's copy may predate the message, or its edit
                conversation = self.store.open(session_id, step_id, uid)
                ref = _file_ref(conversation, message_id, n)
            data = self.attachments.read(ref) if ref and self.attachments else None
        except StoreUnavailable as exc:
            raise Unavailable("storage_unavailable", UNAVAILABLE) from exc
        if ref is None or data is None:
            raise NotFound("not_found", "no such file")
        return data, ref

    def _owned(self, session_id: str, step_id: str, uid: str) -> Any:
        conversation = self.store.open(session_id, step_id, uid)
        if not conversation.session_exists:
            raise NotFound("not_found", "no such session")
        return conversation


def _file_ref(conversation: Any, message_id: str, n: int) -> FileRef | None:
    message = conversation.get(message_id)
    return next((f for f in (message.files if message else ()) if f.n == n), None)
