"""Firestore: a step's conversation, and how a reply is claimed in it.

Paths, locks and this process's copies of histories are `access.py`'s and `copies.py`'s; what
a claimed reply writes after its claim is `replies.py`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat import ports
from ..chat.budget import Spend
from ..chat.domain import UNSETTLED, Message, Mode, Outcome, Quota, UserMessage
from ..chat.errors import StoreUnavailable
from ..chat.ports import Moved
from ..chat.team import Role
from . import documents
from .access import Claim, FirestoreAccess
from .claims import Claims
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
    spend: Spend | None = None  # the caller's and the project's tokens today, for a turn

    @property
    def session_exists(self) -> bool:
        return self.head.exists

    @property
    def role(self) -> Role | None:
        return self.head.role_of(self.uid)

    @property
    def deleting(self) -> bool:
        return self.head.deleting

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return self.head.outcomes

    @property
    def session_turns(self) -> Quota:
        return self.head.turns

    @property
    def names(self) -> dict[str, str]:
        return {uid: m.name for uid, m in self.head.members.items()}

    @property
    def board_version(self) -> str:
        head = self.head  # a reborn session's board counts from 0 again: its id tells them apart
        return f"{head.incarnation}/{head.board_version}" if head.board_version else ""

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

    def open(
        self,
        session_id: str,
        step_id: str,
        uid: str,
        quota: int = 0,
        budget: bool = False,
        seen: Sequence[str] = (),
    ) -> Conversation:
        """The session as it is now and the step's history: one read of the head (with the
        caller's rate-limit state, their token spend today when `budget` and not read in
        the last few seconds, the replies this process's copy holds unfinished, and the
        messages the client has `seen` that the copy lacks), then, only when the step moved
        further than that, the messages numbered after the copy, by id."""
        access = self.access
        key = (session_id, step_id)
        copy = access.histories.get(key)
        session_ref = access.session(session_id)
        refs = [session_ref]
        if quota:
            refs.append(access.rate(uid))
        now = time.time()
        ledger = access.ledger
        counted = budget and ledger.on
        spent = ledger.user_ref(uid, now) if counted and ledger.due(uid, now) else None
        if spent is not None:
            refs.append(spent)
        listed = [*copy.unfinished, *copy.ahead(seen, uid)] if copy else []
        beside = [access.messages(*key).document(m) for m in listed]
        found = access.get_all(refs + beside)
        head_snap = found[session_ref.path]
        head = documents.head(head_snap)
        rate = documents.quota(found[access.rate(uid).path], quota) if quota else None
        user_snap = found[spent.path] if spent is not None else None
        spend = ledger.spend(uid, user_snap, now) if counted else None
        looked = Conversation(session_id, step_id, uid, head, [], rate, spend)
        if head.exists and (head.role_of(uid) is None or head.deleting):
            # Not the caller's to read (the core says so): nothing more is read for them,
            # and their hints no more ahead of a look.
            access.histories.forget_writer(key, uid)
            return looked
        if not head.exists or (step_id not in head.steps and not head.legacy):
            access.histories.drop(key)
            return looked
        snaps = [found[ref.path] for ref in beside]
        looked.messages = self._merge(key, head, copy, snaps, head_snap.read_time)
        return looked

    def _merge(
        self,
        key: tuple[str, str],
        head: Head,
        copy: Copy | None,
        read: list[Any],
        read_time: datetime,
    ) -> list[Message]:
        """This process's copy brought up to the head; read whole when it cannot be. `read`
        and the head were read at `read_time`."""
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
                copy = Copy(head.incarnation, step.seq, step.cuts, tuple(messages), head.writers)
                access.histories.put(key, copy)
            return messages
        new: list[Message] = []
        changed = step.changed_since(copy.seq)
        first, remembered = step.remembered
        by_id = remembered if changed is None else changed
        unfinished = set(copy.unfinished)
        # What was read ahead counts only where the head says it changed.
        taken = unfinished.union(by_id)
        snaps = [snap for snap in read if snap.id in taken]
        held = {s.id for s in snaps}
        ids = [i for i in dict.fromkeys(by_id) if i not in held]
        if changed is None and ids:  # more changed than the head or the client knew
            snaps = [snap for snap in snaps if snap.id in unfinished]
            new = access.since(*key, copy.seq)
        elif changed is None:  # the client knew what the head remembers: the rest by number,
            # as they were when the head was read (else a message renumbered since slips by)
            new = access.since(*key, copy.seq, below=first, at=read_time)
        elif ids:
            refs = [access.messages(*key).document(i) for i in ids]
            snaps += list(access.get_all(refs).values())
        gone = {snap.id for snap in snaps if not snap.exists}
        new += [documents.message(snap, access.lease_seconds) for snap in snaps if snap.exists]
        messages = brought_up(copy, new, gone, step.cuts, step.cut_after)
        copy = Copy(head.incarnation, step.seq, step.cuts, tuple(messages), head.writers)
        access.histories.put(key, copy)
        return messages

    def reply(self, session_id: str, step_id: str, reply_id: str) -> Message | None:
        access = self.access
        ref = access.messages(session_id, step_id).document(reply_id)
        snap = access.get_all([ref])[ref.path]
        return documents.message(snap, access.lease_seconds) if snap.exists else None

    # The claim ------------------------------------------------------------------------

    def begin(
        self,
        conversation: ports.Conversation,
        user: UserMessage,
        reply_id: str,
        mode: Mode,
        now: float,
        seen_reply: Message | None,
    ) -> Claim | Moved | None:
        """Store the user message and claim the reply.

        `mode` is new (both created), queue (both created, the reply waiting its turn; with
        `seen_reply`, a waiting reply adopted), start (a waiting reply's turn came), edit (user
        updated, later messages deleted), regenerate (later messages deleted), resume (reply
        missing, failed or lapsed) or continue (the reply, kept, carries on after the team's
        approval).
        None: a racing request won. Moved: the session changed since `conversation` was read
        (a new turn only), with what is stored now.
        """
        assert isinstance(conversation, Conversation)  # this adapter's own look
        claims = Claims(self.access, self.open)
        if mode == "new" or (mode == "queue" and seen_reply is None):
            return claims.new(conversation, user, reply_id, now, queued=mode == "queue")
        return claims.again(conversation, user, reply_id, mode, now, seen_reply)

    def spend_minute(self, uid: str, now: float, per_minute: int) -> None:
        used = Quota(now, per_minute, None, per_minute)
        access = self.access
        try:
            access.rate(uid).set(
                documents.quota_fields(used), retry=access.retry, timeout=access.timeout
            )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

    # Replies in flight ------------------------------------------------------------------

    def pending(self, session_id: str, step_id: str) -> list[Message]:
        """The step's replies being generated now or waiting their turn (or whose instance
        died: `lapsed`), oldest first."""
        access = self.access
        query = access.messages(session_id, step_id).where(
            filter=firestore.FieldFilter("status", "in", list(UNSETTLED))
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


__all__ = ["Claim", "Conversation", "FirestoreStore"]
