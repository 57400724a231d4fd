"""Firestore: a step's conversation, and how a reply is claimed in it.

Paths, locks and this process's copies of histories are `firestore_access`'s; what a claimed
reply writes after its claim is `reply_writes`'s.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.domain import (
    LostClaim,
    Message,
    Moved,
    NotFound,
    Quota,
    RateLimited,
    StoreUnavailable,
    UserMessage,
)
from ..chat.outcomes import Outcome
from . import documents
from .access import Claim, FirestoreAccess
from .copies import Copy, brought_up
from .documents import Head, StepHead

# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001


@dataclass
class Conversation:
    """One step's history as of one look at its session, oldest first."""

    session_id: str
    step_id: str
    uid: str
    head: Head
    messages: list[Message] = field(default_factory=list)
    quota: Quota | None = None  # the caller's turns this minute, when a rate limit applies

    @property
    def session_exists(self) -> bool:
        return self.head.exists

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return self.head.outcomes

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
        """Held from reading a session's state to committing a write on it."""
        return self.access.session_lock(session_id)

    # Reads ---------------------------------------------------------------------------

    def open(self, session_id: str, step_id: str, uid: str, quota: int = 0) -> Conversation:
        """The session as it is now and the step's history: one read of the head (with the
        caller's rate-limit state and the replies this process's copy holds unfinished), then,
        only when the step moved, the messages numbered after the copy, by id."""
        access = self.access
        key = (session_id, step_id)
        copy = access.histories.get(key)
        session_ref = access.session(session_id)
        refs = [session_ref]
        if quota:
            refs.append(access.rate(uid))
        unfinished = [access.messages(*key).document(m) for m in (copy.unfinished if copy else [])]
        found = access.get_all(refs + unfinished)
        head = documents.head(found[session_ref.path])
        if head.exists and (head.owner != uid or head.deleting):
            raise NotFound("not_found", "no such session")
        rate = documents.quota(found[access.rate(uid).path], quota) if quota else None
        if not head.exists or (step_id not in head.steps and not head.legacy):
            access.histories.drop(key)
            return Conversation(session_id, step_id, uid, head, [], rate)
        snaps = [found[ref.path] for ref in unfinished]
        messages = self._merge(key, head, copy, snaps)
        return Conversation(session_id, step_id, uid, head, messages, rate)

    def _merge(
        self,
        key: tuple[str, str],
        head: Head,
        copy: Copy | None,
        unfinished: list[Any],
    ) -> list[Message]:
        """This process's copy brought up to the head; read whole when it cannot be."""
        access = self.access
        step = head.steps.get(key[1], StepHead())
        usable = (
            copy is not None
            and not head.legacy
            and copy.incarnation == head.incarnation
            and step.cuts - copy.cuts in (0, 1)
        )
        if not usable or copy is None:
            messages = access.since(*key, None)
            if not head.legacy:
                copy = Copy(head.incarnation, step.seq, step.cuts, tuple(messages))
                access.histories.put(key, copy)
            return messages
        snaps = list(unfinished)
        new: list[Message] = []
        changed = step.changed_since(copy.seq)
        if changed is None:  # more changed than the head remembers: ask by number
            new = access.since(*key, copy.seq)
        else:
            held = {s.id for s in snaps}
            ids = [i for i in dict.fromkeys(changed) if i not in held]
            if ids:
                refs = [access.messages(*key).document(i) for i in ids]
                snaps += list(access.get_all(refs).values())
        gone = {snap.id for snap in snaps if not snap.exists}
        new += [documents.message(snap, access.lease_seconds) for snap in snaps if snap.exists]
        messages = brought_up(copy, new, gone, step.cuts, step.cut_after)
        access.histories.put(key, Copy(head.incarnation, step.seq, step.cuts, tuple(messages)))
        return messages

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        access = self.access
        ref = access.messages(session_id, step_id).document(reply_id)
        snap = access.get_all([ref])[ref.path]
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
    ) -> Claim | Moved | None:
        """Store the user message and claim the reply.

        `mode` is new (both created), edit (user updated, later messages deleted),
        regenerate (later messages deleted) or resume (reply missing, failed or lapsed).
        None: a racing request won. Moved: the session changed since `conversation` was read
        (a new turn only), with what is stored now.
        """
        if mode == "new":
            return self._begin_new(conversation, user, reply_id, now)
        return self._begin_again(conversation, user, reply_id, mode, now, seen_reply)

    def _begin_new(
        self, c: Conversation, user: UserMessage, reply_id: str, now: float
    ) -> Claim | Moved | None:
        """One atomic batch under a precondition on the head as read: a racing duplicate fails
        its creates, and any other write to the session since the look fails the head's."""
        access = self.access
        key = (c.session_id, c.step_id)
        head = c.head
        step = head.steps.get(c.step_id)
        seq = (step.seq if step else 0) + 2
        at = documents.ts(now)
        generation = uuid.uuid4().hex
        incarnation = head.incarnation if head.exists else uuid.uuid4().hex
        recent = (step or StepHead()).recent_after((seq - 1, user.id), (seq, reply_id))
        counters = {"seq": seq, "messages": 2, "updatedAt": at, "recent": recent}
        batch = access.db.batch()
        session_ref = access.session(c.session_id)
        if not head.exists:
            batch.create(
                session_ref,
                {
                    "ownerUid": c.uid,
                    "incarnation": incarnation,
                    "createdAt": at,
                    "updatedAt": at,
                    "steps": {c.step_id: {**counters, "cuts": 0, "startedAt": at}},
                },
            )
        else:
            fields: dict[str, Any] = {
                "updatedAt": at,
                access.step_field(c.step_id, "seq"): seq,
                access.step_field(c.step_id, "messages"): firestore.Increment(2),
                access.step_field(c.step_id, "updatedAt"): at,
                access.step_field(c.step_id, "recent"): recent,
            }
            if step is None:
                fields[access.step_field(c.step_id, "startedAt")] = at
                fields[access.step_field(c.step_id, "cuts")] = 0
            option = access.db.write_option(last_update_time=head.version)
            batch.update(session_ref, fields, option=option)
        if step is None:
            # An old session's step document may be there already: only make sure it is.
            first = {} if head.legacy and head.exists else {"createdAt": at}
            batch.set(access.step(*key), first, merge=True)
        messages = access.messages(*key)
        batch.create(messages.document(user.id), documents.new_user(user, now, seq - 1))
        reply_at = now + _REPLY_OFFSET
        lease = access.lease_seconds
        reply = documents.new_reply(user.id, reply_id, reply_at, generation, lease, seq)
        batch.create(messages.document(reply_id), reply)
        reply_index = 3 if step is None else 2
        if c.quota is not None:
            counted = c.quota.after_turn(now)
            rate = access.rate(c.uid)
            if counted.version is None:
                batch.create(rate, documents.quota_fields(counted))
            else:
                option = access.db.write_option(last_update_time=counted.version)
                batch.update(rate, documents.quota_fields(counted), option=option)
        try:
            results = batch.commit(retry=access.retry, timeout=access.timeout)
        except (gexc.Conflict, gexc.NotFound, gexc.FailedPrecondition, gexc.Aborted):
            # A twin request won, or something else was written since the look: look again.
            fresh = self.open(c.session_id, c.step_id, c.uid, c.quota.per_minute if c.quota else 0)
            if fresh.get(user.id) is not None or fresh.get(reply_id) is not None:
                return None
            return Moved(fresh)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        new = (
            Message(
                user.id, "user", user.text, "complete", now, now, files=user.files, seq=seq - 1
            ),
            Message(
                reply_id,
                "assistant",
                "",
                "streaming",
                reply_at,
                reply_at,
                user.id,
                generation=generation,
                seq=seq,
            ),
        )
        copy = access.histories.get(key)
        if head.legacy and head.exists:
            pass  # no copies of an old session's steps
        elif copy is not None and copy.seq == seq - 2 and copy.incarnation == incarnation:
            access.histories.put(key, Copy(incarnation, seq, copy.cuts, copy.messages + new))
        elif step is None:
            access.histories.put(key, Copy(incarnation, seq, 0, (*c.messages, *new)))
        ref = messages.document(reply_id)
        return Claim(key, ref, results[reply_index].update_time, reply_at, generation, seq=seq)

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
        messages = access.messages(*key)
        reply_ref = messages.document(reply_id)
        session_ref = access.session(c.session_id)
        stored_user = c.get(user.id)
        if stored_user is None:
            raise NotFound("message_not_found", "the message is not stored")
        # What is dropped: for an edit, everything after the user message; otherwise
        # everything after the reply (the reply itself is overwritten in place).
        anchor = stored_user if mode == "edit" else (seen or stored_user)
        reply_at = seen.created_at if seen else stored_user.created_at + _REPLY_OFFSET
        generation = uuid.uuid4().hex
        # Taking over a lapsed reply: only if nobody wrote it since it was seen lapsed.
        unchanged_since = seen.version if seen is not None and seen.lapsed else None
        later = messages.where(
            filter=firestore.FieldFilter("createdAt", ">", documents.ts(anchor.created_at))
        )

        @firestore.transactional
        def claim(tx: Any) -> tuple[tuple[str, ...], int] | None:
            refs = [session_ref, reply_ref]
            if c.quota is not None:
                refs.append(access.rate(c.uid))
            snaps = {s.reference.path: s for s in tx.get_all(refs)}
            head = documents.head(snaps[session_ref.path])
            if (
                not head.exists
                or head.owner != c.uid
                or head.deleting
                or head.incarnation != c.head.incarnation
            ):
                raise NotFound("not_found", "no such session")
            snap = snaps[reply_ref.path]
            current = snap.to_dict().get("generation") if snap.exists else None
            if current != (seen.generation if seen else None):
                return None
            if unchanged_since is not None and snap.update_time != unchanged_since:
                return None
            doomed = tuple(d.id for d in tx.get(later) if d.id != reply_id)
            step = head.steps.get(c.step_id, StepHead())
            seq = step.seq + (2 if mode == "edit" else 1)
            at = documents.ts(now)
            taken = [(seq, reply_id)] if mode != "edit" else [(seq - 1, user.id), (seq, reply_id)]
            if mode == "edit":
                fields = {"parts": documents.user_parts(user), "updatedAt": at, "seq": seq - 1}
                tx.update(messages.document(user.id), fields)
            for message_id in doomed:
                tx.delete(messages.document(message_id))
            lease = access.lease_seconds
            reply = documents.new_reply(user.id, reply_id, reply_at, generation, lease, seq)
            tx.set(reply_ref, reply)
            counted = (0 if snap.exists else 1) - len(doomed)
            head_fields: dict[str, Any] = {
                "updatedAt": at,
                access.step_field(c.step_id, "seq"): seq,
                access.step_field(c.step_id, "messages"): firestore.Increment(counted),
                access.step_field(c.step_id, "updatedAt"): at,
                access.step_field(c.step_id, "recent"): step.recent_after(*taken),
            }
            if doomed:
                head_fields[access.step_field(c.step_id, "cuts")] = step.cuts + 1
                cut_after = documents.ts(anchor.created_at)
                head_fields[access.step_field(c.step_id, "cutAfter")] = cut_after
            tx.update(session_ref, head_fields)
            if c.quota is not None:
                rate = access.rate(c.uid)
                stored = documents.quota(snaps[rate.path], c.quota.per_minute)
                wait = stored.wait(now)
                if wait is not None:  # a racing turn took the last one since the look
                    raise RateLimited("rate_limited", "too many messages; wait a moment", wait)
                tx.set(rate, documents.quota_fields(stored.after_turn(now)))
            return doomed, seq

        try:
            won = claim(access.db.transaction())
            if won is None:
                return None
            snap = reply_ref.get(retry=access.retry, timeout=access.timeout)
        except (gexc.Conflict, gexc.NotFound):
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if (snap.to_dict() or {}).get("generation") != generation:
            return None
        doomed, seq = won
        return Claim(key, reply_ref, snap.update_time, reply_at, generation, doomed, seq)

    # Replies in flight ------------------------------------------------------------------

    def streaming(self, session_id: str, step_id: str) -> list[Message]:
        """The step's replies being generated now (or whose instance died: `lapsed`)."""
        access = self.access
        query = access.messages(session_id, step_id).where(
            filter=firestore.FieldFilter("status", "==", "streaming")
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
