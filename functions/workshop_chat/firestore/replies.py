"""Firestore: what a claimed reply writes, for many replies in one RPC: checkpoints, lease
renewals and finals, each conditional on the claim's last known write.

None of them touches the session's head: a reply keeps the number its claim gave it, and a
process whose copy holds it unfinished reads it again (see `history_cache`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from ..chat.budget import tokens_of
from ..chat.domain import Content
from ..chat.ports import ReplyWrite, WriteOutcome
from . import documents
from .access import Claim, FirestoreAccess

_OK, _NOT_FOUND, _FAILED_PRECONDITION = 0, 5, 9
_MAX_BATCH = 500 // 3  # BatchWrite's limit, with a final's two ledger increments


class ReplyWriter:
    """The `Checkpointer`'s store. What it shares with the other Firestore adapters (client,
    caches, locks) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def write_replies(self, writes: list[ReplyWrite]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(writes), _MAX_BATCH):
            outcomes += self._write_batch(writes[start : start + _MAX_BATCH])
        return outcomes

    def _write_batch(self, writes: list[ReplyWrite]) -> list[WriteOutcome]:
        access = self.access
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=access.lease_seconds)
        batch = BulkWriteBatch(access.db)
        charged: list[Claim] = []
        spent: dict[str, int] = {}
        for write in writes:
            claim = _claim(write)
            fields: dict[str, Any] = {"updatedAt": now, "lease": lease}
            if write.content is not None:
                fields["parts"] = documents.reply_parts(write.content)
            if write.ending is not None:
                fields.update(documents.final_fields(write.ending))
            option = access.db.write_option(last_update_time=claim.update_time)
            batch.update(claim.ref, fields, option=option)
            if write.ending is not None and not claim.charged:
                # The reply's tokens ride in its final write; once that write has answered,
                # a retry of it charges nothing more.
                spent[claim.uid] = spent.get(claim.uid, 0) + tokens_of(write.ending.usage)
                charged.append(claim)
        access.ledger.charge(batch, spent, time.time())
        try:
            response = batch.commit(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError:
            return [WriteOutcome.UNSTORED] * len(writes)
        for claim in charged:
            claim.charged = True
        results, statuses = list(response.write_results), list(response.status)
        outcomes = [self._outcome(w, results[i], statuses[i]) for i, w in enumerate(writes)]
        for write, outcome in zip(writes, outcomes, strict=True):
            if outcome == WriteOutcome.WROTE and write.ending is not None:
                self._settled(write)
        return outcomes

    def _settled(self, write: ReplyWrite) -> None:
        """This process's copy of the step learns the final from the write itself."""
        claim = _claim(write)
        ending = write.ending
        assert ending is not None
        content = write.content or Content("")
        self.access.histories.settle(
            claim.key,
            claim.ref.id,
            text=content.text,
            reasoning=content.reasoning,
            sources=content.sources,
            tools=content.tools,
            steps=content.steps,
            status=ending.status,
            finish_reason=ending.finish_reason,
            usage=ending.usage,
            model=ending.model,
        )

    def _outcome(self, write: ReplyWrite, result: Any, status: Any) -> WriteOutcome:
        claim = _claim(write)
        if status.code == _OK:
            claim.update_time = result.update_time
            return WriteOutcome.WROTE
        if status.code == _NOT_FOUND:
            return WriteOutcome.LOST
        if status.code != _FAILED_PRECONDITION:
            return WriteOutcome.UNSTORED
        # The client retries an RPC that timed out, and when the first attempt had landed the
        # retry fails its precondition on our own write. The generation tells the two apart.
        try:
            snap = claim.ref.get(retry=self.access.retry, timeout=self.access.timeout)
        except gexc.GoogleAPIError:
            return WriteOutcome.UNSTORED
        data = snap.to_dict() if snap.exists else None
        if data is None or data.get("generation") != claim.generation:
            return WriteOutcome.LOST
        claim.update_time = snap.update_time
        if write.ending is None and data.get("stopRequested"):
            return WriteOutcome.STOP
        if write.ending is not None:
            final = documents.final_fields(write.ending)
            if all(data.get(k) == v for k, v in final.items()) and documents.text(
                data.get("parts")
            ) == (write.content.text if write.content else ""):
                return WriteOutcome.WROTE
        return (
            WriteOutcome.UNSTORED
        )  # ours still: the next attempt carries the precondition it needs


def _claim(write: ReplyWrite) -> Claim:
    """The claim a write is made under: this adapter's own (it made it)."""
    assert isinstance(write.claim, Claim)
    return write.claim
