"""Firestore: how a reply is claimed in a step. A new turn is one atomic batch under a
precondition on the session head as read; an edit, regenerate or takeover is a transaction.
Both take the step's next write numbers from the head (see `copies.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.domain import Message, Mode, Quota, Status, UserMessage
from ..chat.errors import StoreUnavailable
from ..chat.ports import Moved
from ..chat.team import WRITERS
from . import documents
from .access import Claim, FirestoreAccess
from .copies import Copy
from .documents import StepHead

if TYPE_CHECKING:
    from .conversations import Conversation

# The reply sorts right after its user message, whatever the clocks of other instances say.
_REPLY_OFFSET = 0.001


class Claims:
    """Claims on one process's behalf; `look` reads what is stored now when a claim fails."""

    def __init__(self, access: FirestoreAccess, look: Callable[..., Conversation]) -> None:
        self.access = access
        self.look = look

    def new(
        self, c: Conversation, user: UserMessage, reply_id: str, now: float, queued: bool = False
    ) -> Claim | Moved | None:
        """One atomic batch under a precondition on the head as read: a racing duplicate fails
        its creates, and any other write to the session since the look fails the head's, so
        whether the step was busy is decided on the head every turn read. `queued`: the reply
        waits its turn."""
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
                    "turns": documents.turns_fields(Quota().after_turn(now)),
                },
            )
        else:
            fields: dict[str, Any] = {
                "updatedAt": at,
                access.step_field(c.step_id, "seq"): seq,
                access.step_field(c.step_id, "messages"): firestore.Increment(2),
                access.step_field(c.step_id, "updatedAt"): at,
                access.step_field(c.step_id, "recent"): recent,
                "turns": documents.turns_fields(head.turns.after_turn(now)),
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
        status: Status = "queued" if queued else "streaming"
        reply = documents.new_reply(
            user.id, reply_id, reply_at, generation, lease, seq, status=status
        )
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
            fresh = self.look(c.session_id, c.step_id, c.uid, c.quota.per_minute if c.quota else 0)
            if fresh.get(user.id) is not None or fresh.get(reply_id) is not None:
                return None
            return Moved(fresh)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        new = (
            Message(
                user.id,
                "user",
                user.text,
                "complete",
                now,
                now,
                files=user.files,
                seq=seq - 1,
                author=user.author,
            ),
            Message(
                reply_id,
                "assistant",
                "",
                status,
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
            access.histories.put(key, replace(copy, seq=seq, messages=copy.messages + new))
        elif step is None:
            writers = head.writers or frozenset({c.uid})
            access.histories.put(key, Copy(incarnation, seq, 0, (*c.messages, *new), writers))
        ref = messages.document(reply_id)
        update_time = results[reply_index].update_time
        return Claim(
            key, ref, update_time, reply_at, generation, seq=seq, uid=c.uid, epoch=generation
        )

    def again(
        self,
        c: Conversation,
        user: UserMessage,
        reply_id: str,
        mode: Mode,
        now: float,
        seen: Message | None,
    ) -> Claim | Moved | None:
        """Edit, regenerate, resume, continue, a waiting reply adopted (queue) or started: a
        transaction, so only one of racing requests wins. A waiting reply was counted, and
        its sender admitted, when it was stored: adopting or starting it counts nothing and
        deletes nothing."""
        access = self.access
        key = (c.session_id, c.step_id)
        messages = access.messages(*key)
        reply_ref = messages.document(reply_id)
        session_ref = access.session(c.session_id)
        stored_user = c.get(user.id)
        if stored_user is None:
            return None  # the look that decided this holds no such message: look again
        # What is dropped: for an edit, everything after the user message; otherwise
        # everything after the reply (the reply itself is overwritten in place).
        anchor = stored_user if mode == "edit" else (seen or stored_user)
        reply_at = seen.created_at if seen else stored_user.created_at + _REPLY_OFFSET
        generation = uuid.uuid4().hex
        # Taking over a lapsed reply: only if nobody wrote it since it was seen lapsed.
        unchanged_since = seen.version if seen is not None and seen.lapsed else None
        waited = mode in ("queue", "start")
        later = messages.where(
            filter=firestore.FieldFilter("createdAt", ">", documents.ts(anchor.created_at))
        )

        @firestore.transactional
        def claim(tx: Any) -> tuple[tuple[str, ...], int, str] | str | None:
            refs = [session_ref, reply_ref]
            if c.quota is not None:
                refs.append(access.rate(c.uid))
            snaps = {s.reference.path: s for s in tx.get_all(refs)}
            counted: Quota | None = None
            if c.quota is not None and not waited:
                counted = documents.quota(snaps[access.rate(c.uid).path], c.quota.per_minute)
                if counted.wait(now) is not None:
                    return "limited"  # a racing turn took the last one since the look
            head = documents.head(snaps[session_ref.path])
            if (
                not head.exists
                or (head.role_of(c.uid) not in WRITERS and not waited)
                or head.deleting
                or head.incarnation != c.head.incarnation
            ):
                return None  # gone, or changed hands: the caller looks again
            snap = snaps[reply_ref.path]
            current = snap.to_dict().get("generation") if snap.exists else None
            if current != (seen.generation if seen else None):
                return None
            if unchanged_since is not None and snap.update_time != unchanged_since:
                return None
            if mode == "start" and (snap.to_dict() or {}).get("stopRequested"):
                return None  # stopped while it waited: its waiter learns so and ends it
            doomed = () if waited else tuple(d.id for d in tx.get(later) if d.id != reply_id)
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
            stored = (snap.to_dict() or {}) if snap.exists else {}
            # A takeover or an answer goes on with the content's epoch; the rest begin anew.
            kept = mode in ("resume", "continue", "queue", "start") and stored.get("epoch")
            epoch = str(kept) if kept else generation
            status = "queued" if mode == "queue" else "streaming"
            reply = documents.new_reply(
                user.id, reply_id, reply_at, generation, lease, seq, epoch, status
            )
            if mode == "continue":  # carried on: what it holds stays until it is written again
                reply["parts"] = stored.get("parts") or []
            tx.set(reply_ref, reply)
            grown = (0 if snap.exists else 1) - len(doomed)
            head_fields: dict[str, Any] = {
                "updatedAt": at,
                access.step_field(c.step_id, "seq"): seq,
                access.step_field(c.step_id, "messages"): firestore.Increment(grown),
                access.step_field(c.step_id, "updatedAt"): at,
                access.step_field(c.step_id, "recent"): step.recent_after(*taken),
            }
            if not waited:
                head_fields["turns"] = documents.turns_fields(head.turns.after_turn(now))
            if doomed:
                head_fields[access.step_field(c.step_id, "cuts")] = step.cuts + 1
                cut_after = documents.ts(anchor.created_at)
                head_fields[access.step_field(c.step_id, "cutAfter")] = cut_after
            tx.update(session_ref, head_fields)
            if counted is not None:
                tx.set(access.rate(c.uid), documents.quota_fields(counted.after_turn(now)))
            return doomed, seq, epoch

        try:
            won = claim(access.db.transaction())
            if won == "limited" and c.quota is not None:  # the caller sees it in what is stored
                return Moved(self.look(c.session_id, c.step_id, c.uid, c.quota.per_minute))
            if won is None or isinstance(won, str):
                return None
            snap = reply_ref.get(retry=access.retry, timeout=access.timeout)
        except (gexc.Conflict, gexc.NotFound):
            return None
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        if (snap.to_dict() or {}).get("generation") != generation:
            return None
        doomed, seq, epoch = won
        return Claim(
            key, reply_ref, snap.update_time, reply_at, generation, doomed, seq, c.uid, epoch=epoch
        )
