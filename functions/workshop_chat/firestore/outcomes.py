"""Firestore: each step's outcome (its summary), on the step and mirrored on the session head.

A summary covers the step's messages up to a number (`through`, mirrored with it on the head),
so the next one reads only what came after. Whoever summarizes holds a short lease on the step
document, so replies settling on several instances at once make one call, not one each.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.domain import SummaryJob
from ..chat.errors import StoreUnavailable
from ..chat.outcomes import settled_part
from . import documents
from .access import FirestoreAccess

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
        to wait while the step is busy or someone else is summarizing it; None when there is
        nothing to do.

        Whether there is anything, and whether the step is quiet, the head says (one read);
        the step's messages are read only once the lease is taken, so processes whose timers
        fire together read them once between them.
        """
        access = self.access
        session_ref, step_ref = access.session(session_id), access.step(session_id, step_id)
        head = documents.head(access.get_all([session_ref])[session_ref.path])
        counters = head.steps.get(step_id)
        if not head.exists or head.deleting or counters is None:
            return None
        outcome = head.outcomes.get(step_id)
        # After an edit or regenerate cut turns away, the summary is made again from the
        # turns that remain: the old one may hold what was cut.
        again = outcome is None or outcome.cuts != counters.cuts
        covered = 0 if again else outcome.through  # type: ignore[union-attr]
        if counters.seq <= covered:
            return None  # nothing new since the last summary
        now = time.time()
        last_summary = counters.started_at if outcome is None else outcome.updated_at
        if now - counters.updated_at < quiet and now - last_summary < max_wait:
            return counters.updated_at + quiet - now
        step = access.get_all([step_ref])[step_ref.path]
        if not step.exists:
            return None
        data = step.to_dict() or {}
        lease_ends = documents.seconds(data.get("summaryLease"))
        if lease_ends > now:
            return lease_ends - now + 0.5  # look again once that summary is in, or lapsed
        # The step document has the last word: a summary may have landed since the head read.
        again = again and data.get("summarizedCuts") != counters.cuts
        if not again:
            covered = max(covered, int(data.get("summarizedSeq") or 0))
            if counters.seq <= covered:
                return None
        option = access.db.write_option(last_update_time=step.update_time)
        try:
            lease = step_ref.update(
                {"summaryLease": documents.ts(now + _LEASE_SECONDS)},
                option=option,
                retry=access.retry,
                timeout=access.timeout,
            )
        except (gexc.FailedPrecondition, gexc.NotFound):
            return quiet  # someone else took it: look again after theirs
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        new = sorted(access.since(session_id, step_id, covered), key=lambda m: m.created_at)
        part, through = settled_part(new, covered)
        if not any(m.role == "assistant" and m.text.strip() for m in part):
            self._give_back(step_ref, lease.update_time, {})
            return None
        return SummaryJob(
            session_id,
            step_id,
            None if again else data.get("summary"),
            part,
            through,
            counters.cuts,
            counters.started_at or part[0].created_at,
            lease.update_time,
            head.owner or "",
        )

    def _give_back(self, step_ref: Any, lease: Any, charged: dict[str, int]) -> None:
        """The lease goes (unless someone wrote the step since it was taken), with what the
        call that held it cost: a lease taken for nothing (only errors, or empty stopped
        replies, since the last summary), or a call that failed or said nothing."""
        access = self.access
        batch = access.db.batch()
        option = access.db.write_option(last_update_time=lease)
        batch.update(step_ref, {"summaryLease": firestore.DELETE_FIELD}, option=option)
        access.ledger.charge(batch, charged, time.time())
        try:
            batch.commit(retry=access.retry, timeout=access.timeout)
        except (gexc.FailedPrecondition, gexc.NotFound):
            return
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc

    def save_summary(self, job: SummaryJob, summary: str | None, tokens: int = 0) -> None:
        """On the step (what the rules let the owner read) and mirrored on the head (what a
        turn reads anyway), in one batch that holds only while the lease is still ours.
        None gives the lease back, so the next reply's summary need not wait for it. The
        call's `tokens` are charged to the session's owner in the same write."""
        access = self.access
        step_ref = access.step(job.session_id, job.step_id)
        if summary is None:
            self._give_back(step_ref, job.lease, {job.owner: tokens})
            return
        lease = access.db.write_option(last_update_time=job.lease)
        now = datetime.now(UTC)
        mirror = {
            "summary": summary,
            "updatedAt": now,
            "startedAt": documents.ts(job.started_at),
            "through": job.through,
            "cuts": job.cuts,
        }
        batch = access.db.batch()
        batch.update(
            step_ref,
            {
                "summary": summary,
                "summaryUpdatedAt": now,
                "summarizedSeq": job.through,
                "summarizedCuts": job.cuts,
                "summaryLease": firestore.DELETE_FIELD,
            },
            option=lease,
        )
        path = access.db.field_path("outcomes", job.step_id)
        batch.update(access.session(job.session_id), {path: mirror})
        access.ledger.charge(batch, {job.owner: tokens}, time.time())
        try:
            batch.commit(retry=access.retry, timeout=access.timeout)
        except (gexc.FailedPrecondition, gexc.NotFound):
            return  # the lease lapsed and went to another, or the session was deleted
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
