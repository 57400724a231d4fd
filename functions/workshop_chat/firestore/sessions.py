"""Firestore: a whole session: who owns it, the overview of its steps, and its deletion."""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.errors import Conflict, NotFound, StoreUnavailable
from ..chat.ports import SessionView, StepSummary
from ..chat.team import MAX_MEMBERS, Invite, Member, Role, check_role
from . import documents
from .access import FirestoreAccess


class SessionStore:
    """What it shares with the other Firestore adapters (client, caches) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def view(self, session_id: str) -> SessionView:
        """The session as it is now. The steps come from the head, one document: it counts
        each step's messages and mirrors its outcome."""
        ref = self.access.session(session_id)
        snap = self.access.get_all([ref])[ref.path]
        head = documents.head(snap)
        if not head.exists:
            return SessionView(False)
        steps = self._counted(session_id) if head.legacy else _steps(head)
        team = tuple(head.members.values())
        return SessionView(True, head.owner, head.deleting, steps, snap.update_time, team)

    def _counted(self, session_id: str) -> tuple[StepSummary, ...]:
        """A session written before heads counted steps: each step's messages counted."""
        access = self.access
        steps = []
        try:
            for ref in access.session(session_id).collection("steps").list_documents():
                count = access.messages(session_id, ref.id).count().get(timeout=access.timeout)
                snap = ref.get(timeout=access.timeout)
                data = snap.to_dict() or {} if snap.exists else {}
                changed = data.get("updatedAt") or data.get("createdAt")
                steps.append(
                    StepSummary(
                        ref.id,
                        data.get("summary"),
                        documents.seconds(data.get("summaryUpdatedAt")) or None,
                        int(count[0][0].value),
                        documents.seconds(changed),
                        documents.seconds(data.get("createdAt")),
                    )
                )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return tuple(s for s in steps if s.message_count)

    def mark_deleting(self, session: SessionView, session_id: str) -> bool:
        """The first step of a delete: turns elsewhere fail their precondition on the session
        and then read it as gone, so nothing new lands while its files and documents go.
        False when the session changed since `session` was read."""
        access = self.access
        option = access.db.write_option(last_update_time=session.version)
        try:
            access.session(session_id).update(
                {"deleting": True}, option=option, retry=access.retry, timeout=access.timeout
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return True

    def delete_session(self, session_id: str, batch_size: int = 400) -> int:
        """Every message, step and summary of the session, in batches; the session document
        goes last, so an interrupted delete is finished by the next one. Returns the number
        of documents deleted."""
        access = self.access
        session_ref = access.session(session_id)
        deleted = 0
        try:
            # Step documents a crashed write left out still hold messages: list them too.
            for step in session_ref.collection("steps").list_documents():
                deleted += self._delete_all(step.collection("messages"), batch_size)
                step.delete(retry=access.retry, timeout=access.timeout)
                deleted += 1
            deleted += self._delete_all(session_ref.collection("board"), batch_size)
            deleted += self._delete_all(session_ref.collection("invites"), batch_size)
            session_ref.delete(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.histories.drop_session(session_id)
        return deleted + 1

    # The team --------------------------------------------------------------------------

    def add_invite(self, session_id: str, code_hash: str, invite: Invite, by: str) -> None:
        fields = {
            "role": invite.role,
            "expiresAt": documents.ts(invite.expires_at),
            "createdBy": by,
        }
        access = self.access
        ref = access.session(session_id).collection("invites").document(code_hash)
        try:
            ref.set(fields, retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

    def revoke_invite(self, session_id: str, code_hash: str) -> bool:
        access = self.access
        ref = access.session(session_id).collection("invites").document(code_hash)
        try:
            ref.delete(
                option=access.db.write_option(exists=True),
                retry=access.retry,
                timeout=access.timeout,
            )
        except gexc.NotFound:
            return False
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return True

    def join(self, session_id: str, code_hash: str, member: Member, now: float) -> Role:
        """In a transaction: the invite checked and the member added under the head as read,
        so a join racing the session's delete, or the team filling up, cannot slip in."""
        access = self.access
        head_ref = access.session(session_id)
        invite_ref = head_ref.collection("invites").document(code_hash)

        @firestore.transactional
        def add(tx: Any) -> Role:
            snaps = {s.reference.path: s for s in tx.get_all([head_ref, invite_ref])}
            head = documents.head(snaps[head_ref.path])
            invite = snaps[invite_ref.path]
            data = invite.to_dict() or {} if invite.exists else {}
            expires = documents.seconds(data.get("expiresAt"))
            if not head.exists or head.deleting or not invite.exists or expires <= now:
                raise NotFound("invite_not_found", "no such invite, or it has expired")
            known = head.role_of(member.uid)
            if known is not None:
                return known  # joining again changes nothing
            if len(head.members) >= MAX_MEMBERS:
                raise Conflict("team_full", f"a session has at most {MAX_MEMBERS} members")
            role = check_role(data.get("role"))
            joined = Member(member.uid, member.name, role, now)
            path = access.db.field_path("members", member.uid)
            tx.update(
                head_ref, {path: documents.member_fields(joined), "updatedAt": documents.ts(now)}
            )
            return role

        try:
            role: Role = add(access.db.transaction())
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return role

    def remove_member(self, session_id: str, uid: str) -> bool:
        access = self.access
        head_ref = access.session(session_id)
        for _ in range(4):
            head = documents.head(access.get_all([head_ref])[head_ref.path])
            if uid not in head.members:
                return False
            option = access.db.write_option(last_update_time=head.version)
            path = access.db.field_path("members", uid)
            try:
                head_ref.update(
                    {path: firestore.DELETE_FIELD},
                    option=option,
                    retry=access.retry,
                    timeout=access.timeout,
                )
            except (gexc.FailedPrecondition, gexc.NotFound):
                continue  # the session moved since the read: look again
            except gexc.GoogleAPIError as exc:
                raise StoreUnavailable() from exc
            return True
        raise StoreUnavailable()

    def _delete_all(self, collection: Any, batch_size: int) -> int:
        access, deleted = self.access, 0
        while True:
            docs = list(collection.limit(batch_size).stream(retry=access.retry))
            if not docs:
                return deleted
            batch = access.db.batch()
            for doc in docs:
                batch.delete(doc.reference)
            batch.commit(retry=access.retry, timeout=access.timeout)
            deleted += len(docs)

    def step_ids(self, session_id: str) -> list[str]:
        try:
            refs = self.access.session(session_id).collection("steps").list_documents()
            return [ref.id for ref in refs]
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc


def _steps(head: documents.Head) -> tuple[StepSummary, ...]:
    steps = []
    for step_id, step in head.steps.items():
        if not step.messages:
            continue
        outcome = head.outcomes.get(step_id)
        steps.append(
            StepSummary(
                step_id,
                outcome.summary if outcome else None,
                (outcome.updated_at or None) if outcome else None,
                step.messages,
                step.updated_at,
                step.started_at,
            )
        )
    return tuple(steps)
