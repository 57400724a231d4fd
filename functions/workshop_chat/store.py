"""Firestore: a step's conversation, and how a reply is claimed in it.

Paths, locks and this process's copies of histories are `firestore_access`'s; what a claimed
reply writes after its claim is `reply_writes`'s.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from . import documents
from .domain import LostClaim, Message, NotFound, StoreUnavailable, UserMessage
from .firestore_access import Claim, FirestoreAccess
from .memory import Outcome

# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001


@dataclass
class Conversation:
    """One step's history as of `version` (the step document's update time), oldest first."""

    session_id: str
    step_id: str
    uid: str
    session_exists: bool
    step_exists: bool
    version: datetime | None
    messages: list[Message] = field(default_factory=list)
    # What the session's steps found (their outcome summaries), as of `session_version`.
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    session_version: datetime | None = None

    def get(self, message_id: str) -> Message | None:
        for message in self.messages:
            if message.id == message_id:
                return message
        return None


class FirestoreStore:
    """A step's messages and the claims on its replies. What it shares with the other
    Firestore adapters (client, caches, locks) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def session_lock(self, session_id: str) -> threading.Lock:
        """Held from reading a session's cached state to committing a write on it."""
        return self.access.session_lock(session_id)

    # Reads ---------------------------------------------------------------------------

    def open(self, session_id: str, step_id: str, uid: str, fresh: bool = False) -> Conversation:
        """Check ownership and return the step's history: from memory when this instance
        knows it (no read at all), else read and remembered."""
        access = self.access
        key = (session_id, step_id)
        owner = access.owners.get(session_id)
        cached = None if fresh or owner is None else access.histories.get(key)
        session_state = access.session_states.get(session_id)
        if cached is not None and session_state is not None:
            if owner != uid:
                raise NotFound("not_found", "no such session")
            version, outcomes = session_state
            return Conversation(
                session_id, step_id, uid, True, True, cached[0], cached[1], outcomes, version
            )
        session_ref, step_ref = access.session(session_id), access.step(session_id, step_id)
        try:
            session, step = access.db.get_all(
                [session_ref, step_ref], retry=access.retry, timeout=access.timeout
            )
            access.reads += 2
            if session.reference.path != session_ref.path:
                session, step = step, session
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        data = (session.to_dict() or {}) if session.exists else {}
        owner = data.get("ownerUid")
        if (owner is not None and owner != uid) or data.get("deleting"):
            raise NotFound("not_found", "no such session")
        if owner:
            access.remember_owner(session_id, owner)
            access.remember_session(session)
        messages = access.load(session_id, step_id) if step.exists else []
        version = step.update_time if step.exists else None
        if version is not None and owner:
            access.histories.put(key, version, messages, (step.to_dict() or {}).get("revision"))
        return Conversation(
            session_id,
            step_id,
            uid,
            owner is not None,
            step.exists,
            version,
            messages,
            documents.outcomes(data),
            session.update_time if session.exists else None,
        )

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        access = self.access
        try:
            snap = (
                access.messages(session_id, step_id)
                .document(reply_id)
                .get(retry=access.retry, timeout=access.timeout)
            )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.reads += 1
        return documents.message(snap, access.lease_seconds) if snap.exists else None

    # The claim ------------------------------------------------------------------------

    def begin(
        self,
        conversation: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | None:
        """Store the user message and claim the reply; None when a racing write won.

        `mode` is new (both created), edit (user updated, later messages deleted),
        regenerate (later messages deleted) or resume (reply missing, failed or lapsed).
        Outside `new`, the claim holds only if the reply is still as `seen_reply` shows it.
        """
        if mode == "new":
            return self._begin_new(conversation, user, reply_id, now)
        return self._begin_again(conversation, user, reply_id, mode, now, seen_reply)

    def _begin_new(
        self, c: Conversation, user: UserMessage, reply_id: str, now: float
    ) -> Claim | None:
        """One atomic batch. Create preconditions make a racing duplicate fail as a whole, and
        the step's update precondition fails it when this instance's history was stale."""
        access = self.access
        key = (c.session_id, c.step_id)
        generation = uuid.uuid4().hex
        batch = access.db.batch()
        revision = self._stamp(batch, c, now)
        messages = access.messages(c.session_id, c.step_id)
        batch.create(
            messages.document(user.id),
            {
                "id": user.id,
                "role": "user",
                "parts": documents.user_parts(user),
                "status": "complete",
                "createdAt": documents.ts(now),
                "updatedAt": documents.ts(now),
            },
        )
        reply_at = now + _REPLY_OFFSET
        reply = documents.new_reply(user.id, reply_id, reply_at, generation, access.lease_seconds)
        batch.create(messages.document(reply_id), reply)
        try:
            results = batch.commit(retry=access.retry, timeout=access.timeout)
        except (gexc.Conflict, gexc.NotFound, gexc.FailedPrecondition, gexc.Aborted):
            # AlreadyExists: a twin request won. NotFound or FailedPrecondition: what this
            # instance remembered is out of date. Aborted: contention. Either way: look again.
            access.forget(key)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        session_version = results[0].update_time
        step_version, reply_version = results[1].update_time, results[-1].update_time
        access.session_states[c.session_id] = (session_version, c.outcomes)
        new = [
            Message(user.id, "user", user.text, "complete", now, now, files=user.files),
            Message(
                reply_id,
                "assistant",
                "",
                "streaming",
                reply_at,
                reply_at,
                user.id,
                generation=generation,
            ),
        ]
        access.remember_owner(c.session_id, c.uid)
        if c.step_exists:
            access.histories.advance(key, c.version, step_version, lambda ms: ms + new, revision)
        else:
            access.histories.put(key, step_version, new, revision)
        return Claim(key, messages.document(reply_id), reply_version, reply_at, generation)

    def _begin_again(
        self,
        c: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: str,
        now: float,
        seen: Message | None,
    ) -> Claim | None:
        """Edit, regenerate or resume: a transaction, so only one of racing requests wins."""
        access = self.access
        key = (c.session_id, c.step_id)
        messages = access.messages(c.session_id, c.step_id)
        reply_ref = messages.document(reply_id)
        stored_user = c.get(user.id)
        if stored_user is None:
            raise NotFound("message_not_found", "the message is not stored")
        # What is dropped: for an edit, everything after the user message; otherwise
        # everything after the reply (the reply itself is overwritten in place).
        anchor = stored_user if mode == "edit" else (seen or stored_user)
        doomed = [m.id for m in c.messages if m.created_at > anchor.created_at and m.id != reply_id]
        reply_at = seen.created_at if seen else stored_user.created_at + _REPLY_OFFSET
        generation = uuid.uuid4().hex
        # Taking over a lapsed reply: only if nobody wrote it since it was seen lapsed.
        unchanged_since = seen.version if seen is not None and seen.lapsed else None

        @firestore.transactional
        def claim(tx: Any) -> bool:
            snap = reply_ref.get(transaction=tx, retry=access.retry, timeout=access.timeout)
            current = snap.to_dict().get("generation") if snap.exists else None
            if current != (seen.generation if seen else None):
                return False
            if unchanged_since is not None and snap.update_time != unchanged_since:
                return False
            if mode == "edit":
                tx.update(
                    messages.document(user.id),
                    {"parts": documents.user_parts(user), "updatedAt": documents.ts(now)},
                )
            for message_id in doomed:
                tx.delete(messages.document(message_id))
            lease = access.lease_seconds
            tx.set(reply_ref, documents.new_reply(user.id, reply_id, reply_at, generation, lease))
            self._stamp(tx, c, now, conditional=False)
            return True

        # The history changes under a transaction whose write times it does not return:
        # the next turn reads it again.
        access.histories.drop(key)
        access.session_states.pop(c.session_id, None)
        try:
            if not claim(access.db.transaction()):
                return None
            snap = reply_ref.get(retry=access.retry, timeout=access.timeout)
        except (gexc.Conflict, gexc.NotFound):
            access.forget(key)
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if (snap.to_dict() or {}).get("generation") != generation:
            return None
        return Claim(key, reply_ref, snap.update_time, reply_at, generation, tuple(doomed))

    def _stamp(self, writer: Any, c: Conversation, now: float, conditional: bool = True) -> str:
        """Session and step bookkeeping; `createdAt` only by create, so it is written once.
        Returns the step's new `revision`."""
        access = self.access
        session_ref, step_ref = access.session(c.session_id), access.step(c.session_id, c.step_id)
        stamp = {"updatedAt": documents.ts(now), "revision": uuid.uuid4().hex}
        if c.session_exists and conditional and c.session_version is not None:
            option = access.db.write_option(last_update_time=c.session_version)
            writer.update(session_ref, {"updatedAt": documents.ts(now)}, option=option)
        elif c.session_exists:
            writer.update(session_ref, {"updatedAt": documents.ts(now)})
        else:
            writer.create(
                session_ref,
                {"ownerUid": c.uid, "createdAt": documents.ts(now), "updatedAt": documents.ts(now)},
            )
        if not c.step_exists:
            writer.create(step_ref, {"createdAt": documents.ts(now), **stamp})
        elif conditional and c.version is not None:
            option = access.db.write_option(last_update_time=c.version)
            writer.update(step_ref, stamp, option=option)
        else:
            writer.update(step_ref, stamp)
        return stamp["revision"]

    # Replies in flight ------------------------------------------------------------------

    def streaming(self, session_id: str, step_id: str) -> list[Message]:
        """The step's replies being generated now (or whose instance died: `lapsed`)."""
        access = self.access
        query = access.messages(session_id, step_id).where(
            filter=FieldFilter("status", "==", "streaming")
        )
        try:
            docs = list(query.stream(retry=access.retry, timeout=access.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.reads += max(1, len(docs))
        found = (documents.message(d, access.lease_seconds) for d in docs)
        return sorted(found, key=lambda m: m.created_at)

    def request_stop(self, session_id: str, step_id: str, reply_id: str) -> bool:
        """Ask the instance generating a reply to stop: its next write finds this and stops.

        A plain update, no precondition: it changes the document under the generation, whose
        next conditional write then fails, reads the document, and sees the request.
        """
        access = self.access
        ref = access.messages(session_id, step_id).document(reply_id)
        try:
            ref.update({"stopRequested": True}, retry=access.retry, timeout=access.timeout)
        except gexc.NotFound:
            return False
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return True


__all__ = ["Claim", "Conversation", "FirestoreStore", "LostClaim"]
