"""Firestore: what a claimed reply writes, for many replies in one RPC: checkpoints, lease
renewals and finals, each conditional on the claim's last known write."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from . import documents
from .checkpoints import ReplyWrite
from .domain import Message
from .firestore_access import Claim, FirestoreAccess
from .reply import LOST, STOP, UNSTORED, WROTE

_OK, _NOT_FOUND, _FAILED_PRECONDITION = 0, 5, 9
_MAX_BATCH = 500  # BatchWrite's limit


class ReplyWriter:
    """The `Checkpointer`'s store. What it shares with the other Firestore adapters (client,
    caches, locks) comes in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def write_replies(self, writes: list[ReplyWrite]) -> list[str]:
        outcomes: list[str] = []
        for start in range(0, len(writes), _MAX_BATCH // 2):
            chunk = writes[start : start + _MAX_BATCH // 2]
            finishing = (w.claim.key[0] for w in chunk if w.ending is not None)  # type: ignore[attr-defined]
            with contextlib.ExitStack() as held:
                for lock in self.access.session_locks(finishing):
                    held.enter_context(lock)
                outcomes += self._write_batch(chunk)
        return outcomes

    def _write_batch(self, writes: list[ReplyWrite]) -> list[str]:
        access = self.access
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=access.lease_seconds)
        batch = BulkWriteBatch(access.db)
        steps: dict[tuple[str, str], list[tuple[Claim, ReplyWrite]]] = {}
        for write in writes:
            claim: Claim = write.claim  # type: ignore[assignment]
            fields: dict[str, Any] = {"updatedAt": now, "lease": lease}
            if write.text is not None:
                fields["parts"] = documents.parts(write.text, write.reasoning, write.sources)
            if write.ending is not None:
                fields.update(documents.final_fields(write.ending))
                steps.setdefault(claim.key, []).append((claim, write))
            option = access.db.write_option(last_update_time=claim.update_time)
            batch.update(claim.ref, fields, option=option)
        versions: dict[tuple[str, str], datetime | None] = {}
        revisions: dict[tuple[str, str], str] = {}
        for key in steps:
            versions[key] = access.histories.version(key)
            revisions[key] = uuid.uuid4().hex
            stamp = {"updatedAt": now, "revision": revisions[key]}
            option = (
                access.db.write_option(last_update_time=versions[key]) if versions[key] else None
            )
            batch.update(access.step(*key), stamp, option=option)
        try:
            response = batch.commit(retry=access.retry, timeout=access.timeout)
        except gexc.GoogleAPIError:
            return [UNSTORED] * len(writes)
        results, statuses = list(response.write_results), list(response.status)
        outcomes = [self._outcome(w, results[i], statuses[i]) for i, w in enumerate(writes)]
        position = {id(w): i for i, w in enumerate(writes)}
        stale = []
        for offset, (key, finals) in enumerate(steps.items()):
            status, result = statuses[len(writes) + offset], results[len(writes) + offset]
            if status.code == _OK and versions[key] is not None:
                landed = [(c, w) for c, w in finals if outcomes[position[id(w)]] == WROTE]
                change = _finals(landed)
                access.histories.advance(
                    key, versions[key], result.update_time, change, revisions[key]
                )
            elif status.code != _OK:
                stale.append(key)
        self._bump(stale, now)
        return outcomes

    def _outcome(self, write: ReplyWrite, result: Any, status: Any) -> str:
        claim: Claim = write.claim  # type: ignore[assignment]
        if status.code == _OK:
            claim.update_time = result.update_time
            return WROTE
        if status.code == _NOT_FOUND:
            return LOST
        if status.code != _FAILED_PRECONDITION:
            return UNSTORED
        # The client retries an RPC that timed out, and when the first attempt had landed the
        # retry fails its precondition on our own write. The generation tells the two apart.
        try:
            snap = claim.ref.get(retry=self.access.retry, timeout=self.access.timeout)
        except gexc.GoogleAPIError:
            return UNSTORED
        data = snap.to_dict() if snap.exists else None
        if data is None or data.get("generation") != claim.generation:
            return LOST
        claim.update_time = snap.update_time
        if write.ending is None and data.get("stopRequested"):
            return STOP
        if write.ending is not None:
            final = documents.final_fields(write.ending)
            if all(data.get(k) == v for k, v in final.items()) and documents.text(
                data.get("parts")
            ) == (write.text or ""):
                return WROTE
        return UNSTORED  # ours still: the next attempt carries the precondition it needs

    def _bump(self, keys: list[tuple[str, str]], now: datetime) -> None:
        """A step written meanwhile by someone else: still tell other instances it changed."""
        access = self.access
        for key in keys:
            access.histories.drop(key)
            # If this fails too, other instances keep a stale copy until the step's next write.
            with contextlib.suppress(gexc.GoogleAPIError):
                access.step(*key).update(
                    {"updatedAt": now, "revision": uuid.uuid4().hex},
                    retry=access.retry,
                    timeout=access.timeout,
                )


def _finals(landed: list[tuple[Claim, ReplyWrite]]) -> Callable[[list[Message]], list[Message]]:
    """The cached history after these finals: each reply's text and end, as stored."""
    done = {c.ref.id: w for c, w in landed}

    def change(messages: list[Message]) -> list[Message]:
        out = []
        for m in messages:
            write = done.get(m.id)
            if write is not None and write.ending is not None:
                e = write.ending
                m = replace(
                    m,
                    text=write.text or "",
                    reasoning=write.reasoning,
                    sources=write.sources,
                    status=e.status,
                    finish_reason=e.finish_reason,
                    usage=e.usage,
                    model=e.model,
                )
            out.append(m)
        return out

    return change
