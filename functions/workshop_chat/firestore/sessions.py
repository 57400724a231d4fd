"""Firestore: a whole session, for its owner: the overview of its steps, and its deletion."""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc

from ..chat.domain import NotFound, StoreUnavailable
from . import documents
from .access import FirestoreAccess


class SessionStore:
    """What it shares with the other Firestore adapters (client, caches) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def _owned_session(self, session_id: str, uid: str) -> Any:
        access = self.access
        ref = access.session(session_id)
        snap = access.get_all([ref])[ref.path]
        data = snap.to_dict() or {} if snap.exists else {}
        if not snap.exists or data.get("ownerUid") != uid:
            raise NotFound("not_found", "no such session")
        return snap

    def overview(self, session_id: str, uid: str) -> list[dict[str, Any]]:
        """Each step with messages: its summary, when it was made, its size and last change.
        One document: the head counts each step's messages and mirrors its outcome."""
        head = documents.head(self._owned_session(session_id, uid))
        if head.deleting:
            raise NotFound("not_found", "no such session")
        if head.legacy:
            return self._counted(session_id, head)
        steps = []
        for step_id, step in head.steps.items():
            if not step.messages:
                continue
            outcome = head.outcomes.get(step_id)
            steps.append(
                {
                    "stepId": step_id,
                    "summary": outcome.summary if outcome else None,
                    "summaryUpdatedAt": (outcome.updated_at or None) if outcome else None,
                    "messageCount": step.messages,
                    "updatedAt": step.updated_at,
                    "startedAt": step.started_at,
                }
            )
        return steps

    def _counted(self, session_id: str, head: documents.Head) -> list[dict[str, Any]]:
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
                    {
                        "stepId": ref.id,
                        "summary": data.get("summary"),
                        "summaryUpdatedAt": documents.seconds(data.get("summaryUpdatedAt")) or None,
                        "messageCount": int(count[0][0].value),
                        "updatedAt": documents.seconds(changed),
                        "startedAt": documents.seconds(data.get("createdAt")),
                    }
                )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return [s for s in steps if s["messageCount"]]

    def mark_deleting(self, session_id: str, uid: str) -> None:
        """The first step of a delete, for the owner only (also of a session half deleted):
        turns elsewhere fail their precondition on the session and then read it as gone, so
        nothing new lands while its files and documents go."""
        access = self.access
        snap = self._owned_session(session_id, uid)
        try:
            snap.reference.update({"deleting": True}, retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

    def delete_session(self, session_id: str, uid: str, batch_size: int = 400) -> int:
        """Every message, step and summary of the session, in batches; the session document
        goes last, so an interrupted delete is finished by the next one. Returns the number
        of documents deleted."""
        access = self.access
        snap = self._owned_session(session_id, uid)
        session_ref = snap.reference
        deleted = 0
        try:
            # Step documents a crashed write left out still hold messages: list them too.
            for step in session_ref.collection("steps").list_documents():
                messages = step.collection("messages")
                while True:
                    docs = list(messages.limit(batch_size).stream(retry=access.retry))
                    if not docs:
                        break
                    batch = access.db.batch()
                    for doc in docs:
                        batch.delete(doc.reference)
                    batch.commit(retry=access.retry, timeout=access.timeout)
                    deleted += len(docs)
                step.delete(retry=access.retry, timeout=access.timeout)
                deleted += 1
            session_ref.delete(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.histories.drop_session(session_id)
        return deleted + 1

    def step_ids(self, session_id: str) -> list[str]:
        try:
            refs = self.access.session(session_id).collection("steps").list_documents()
            return [ref.id for ref in refs]
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
