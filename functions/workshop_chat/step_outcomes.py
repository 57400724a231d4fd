"""Firestore: each step's outcome (its summary), on the step and mirrored on the session."""

from __future__ import annotations

from datetime import UTC, datetime

from google.api_core import exceptions as gexc

from . import documents
from .domain import Message, StoreUnavailable
from .firestore_access import FirestoreAccess
from .memory import Outcome


class OutcomeStore:
    """`Summaries`' store. What it shares with the other Firestore adapters (client, caches,
    locks) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def step_for_summary(
        self, session_id: str, step_id: str
    ) -> tuple[list[Message], str | None, str | None]:
        """The step's whole conversation, its last summary and the revision they are at: from
        memory when this instance knows them (no read), else read."""
        access = self.access
        key = (session_id, step_id)
        cached, revision = access.histories.get(key), access.histories.revision(key)
        session_state = access.session_states.get(session_id)
        if cached is not None and revision and session_state is not None:
            previous = session_state[1].get(step_id)
            return cached[1], previous.summary if previous else None, revision
        try:
            step = access.step(session_id, step_id).get(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        access.reads += 1
        if not step.exists:
            return [], None, None
        data = step.to_dict() or {}
        return access.load(session_id, step_id), data.get("summary"), data.get("revision")

    def save_summary(
        self, session_id: str, step_id: str, summary: str, revision: str, started_at: float
    ) -> None:
        """On the step (what the rules let the owner read) and mirrored on the session (what a
        turn reads with no extra round trip), in one batch conditional on what this instance
        knows of both, so its own caches stay valid; unconditional if they are stale."""
        access = self.access
        key = (session_id, step_id)
        now = datetime.now(UTC)
        outcome = Outcome(step_id, summary, started_at)
        mirror = {"summary": summary, "updatedAt": now, "startedAt": documents.ts(started_at)}
        step_fields = {"summary": summary, "summaryUpdatedAt": now, "summarizedRevision": revision}
        with access.session_lock(session_id):
            step_version = access.histories.version(key)
            session_state = access.session_states.get(session_id)
            for conditional in (True, False):
                batch = access.db.batch()
                option = (
                    access.db.write_option(last_update_time=step_version)
                    if conditional and step_version
                    else None
                )
                batch.update(access.step(*key), step_fields, option=option)
                session_option = (
                    access.db.write_option(last_update_time=session_state[0])
                    if conditional and session_state
                    else None
                )
                path = access.db.field_path("outcomes", step_id)
                batch.update(access.session(session_id), {path: mirror}, option=session_option)
                try:
                    results = batch.commit(retry=access.retry, timeout=access.timeout)
                except gexc.FailedPrecondition:
                    access.histories.drop(key)
                    access.session_states.pop(session_id, None)
                    continue
                except gexc.NotFound:
                    return  # the session was deleted meanwhile
                except gexc.GoogleAPIError as exc:
                    raise StoreUnavailable() from exc
                if conditional and step_version:
                    access.histories.advance(key, step_version, results[0].update_time, lambda m: m)
                if conditional and session_state:
                    outcomes = {**session_state[1], step_id: outcome}
                    access.session_states[session_id] = (results[1].update_time, outcomes)
                return
