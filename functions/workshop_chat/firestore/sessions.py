"""Firestore: a whole session: who owns it, the overview of its steps, and its deletion."""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc

from ..chat.errors import StoreUnavailable
from ..chat.ports import SessionView, StepSummary
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
        return SessionView(True, head.owner, head.deleting, steps, snap.update_time)

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
            session_ref.delete(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.histories.drop_session(session_id)
        return deleted + 1

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
