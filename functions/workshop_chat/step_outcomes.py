"""Firestore: each step's outcome (its summary), on the step and mirrored on the session head.

A summary covers the step's messages up to a number (`summarizedSeq`), so the next one reads
only what came after. Whoever summarizes holds a short lease on the step document, so replies
settling on several instances at once make one call, not one each.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import firestore

from . import documents
from .domain import StoreUnavailable
from .firestore_access import FirestoreAccess
from .memory import SummaryJob, settled_part

_LEASE_SECONDS = 120.0


class OutcomeStore:
    """`Summaries`' store. What it shares with the other Firestore adapters comes in
    `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def summary_job(
        self, session_id: str, step_id: str, quiet: float, max_wait: float
    ) -> SummaryJob | float | None:
        """What the next summary of the step covers, with its lease taken; a number of seconds
        to wait while the step is still busy; None when there is nothing to do (or someone
        else is doing it)."""
        access = self.access
        session_ref, step_ref = access.session(session_id), access.step(session_id, step_id)
        found = access.get_all([session_ref, step_ref])
        head, step = documents.head(found[session_ref.path]), found[step_ref.path]
        if not head.exists or head.deleting or not step.exists:
            return None
        data = step.to_dict() or {}
        now = time.time()
        if documents.seconds(data.get("summaryLease")) > now:
            return None
        covered = int(data.get("summarizedSeq") or 0)
        new = sorted(access.since(session_id, step_id, covered), key=lambda m: m.created_at)
        part, through = settled_part(new, covered)
        if not any(m.role == "assistant" and m.text.strip() for m in part):
            return None
        newest = max(m.updated_at for m in new)
        oldest = min(m.created_at for m in part)
        if now - newest < quiet and now - oldest < max_wait:
            return newest + quiet - now
        option = access.db.write_option(last_update_time=step.update_time)
        try:
            lease = step_ref.update(
                {"summaryLease": documents.ts(now + _LEASE_SECONDS)},
                option=option,
                retry=access.retry,
                timeout=access.timeout,
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None  # someone else took it
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        started = head.steps.get(step_id)
        return SummaryJob(
            session_id,
            step_id,
            data.get("summary"),
            part,
            through,
            started.started_at if started else part[0].created_at,
            lease.update_time,
        )

    def save_summary(self, job: SummaryJob, summary: str | None) -> None:
        """On the step (what the rules let the owner read) and mirrored on the head (what a
        turn reads anyway), in one batch that holds only while the lease is still ours.
        None gives the lease back, so the next reply's summary need not wait for it."""
        access = self.access
        lease = access.db.write_option(last_update_time=job.lease)
        step_ref = access.step(job.session_id, job.step_id)
        if summary is None:
            try:
                step_ref.update({"summaryLease": firestore.DELETE_FIELD}, option=lease)
            except (gexc.FailedPrecondition, gexc.NotFound):
                return
            except gexc.GoogleAPIError as exc:
                raise StoreUnavailable() from exc
            return
        now = datetime.now(UTC)
        mirror = {"summary": summary, "updatedAt": now, "startedAt": documents.ts(job.started_at)}
        batch = access.db.batch()
        batch.update(
            step_ref,
            {
                "summary": summary,
                "summaryUpdatedAt": now,
                "summarizedSeq": job.through,
                "summaryLease": firestore.DELETE_FIELD,
            },
            option=lease,
        )
        path = access.db.field_path("outcomes", job.step_id)
        batch.update(access.session(job.session_id), {path: mirror})
        try:
            batch.commit(retry=access.retry, timeout=access.timeout)
        except (gexc.FailedPrecondition, gexc.NotFound):
            return  # the lease lapsed and went to another, or the session was deleted
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
