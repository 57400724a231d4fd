"""What the Firestore adapters share: the client, its retry and timeout, the documents' paths,
the per-session write locks, this process's copies of step histories, and the claim a reply's
writes are made under.

Layout: sessions/{sessionId}/steps/{stepId}/messages/{messageId}. The session document is the
head of the session: its owner and incarnation, each step's write counter (`steps.<id>.seq`,
with its message count and cuts), and the mirror of the steps' outcomes. A turn reads the head
and, beside it in the same round trip, what changed in the step since this process last looked
(`seq` above its copy's). Its claim then writes the head under a precondition on the version it
read, so nothing that moved in between goes unnoticed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from ..chat.domain import Message
from ..chat.errors import StoreUnavailable
from . import documents
from .copies import HistoryCache
from .deadline import retry_within
from .ledger import Ledger

log = logging.getLogger("workshop_chat.firestore")

# Writes to a session's documents from this process go one at a time, each conditional on the
# version the last one left. Striped, so memory stays flat.
_STEP_LOCKS = tuple(threading.Lock() for _ in range(64))


@dataclass
class Claim:
    """A reply this process generates; its writes are conditional on its last known write."""

    key: tuple[str, str]
    ref: Any
    update_time: Any
    created_at: float
    generation: str
    removed: tuple[str, ...] = ()  # messages an edit or regenerate deleted (their files go too)
    seq: int = 0
    uid: str = ""  # whose turn it is: their budget pays for the reply
    charged: bool = False  # its tokens went into a final write that answered
    # The generation that began the reply's content: a takeover or an approval's answer keeps
    # it, a regenerate or edit starts a new one (the board's item ids follow it).
    epoch: str = ""


class FirestoreAccess:
    """One per process, handed to each Firestore adapter. The client is injected (emulator
    in tests)."""

    def __init__(
        self,
        db: firestore.Client,
        lease_seconds: float = 8.0,
        timeout: float = 5.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.db = db
        self.ledger = ledger or Ledger(db, 0, 0)  # no budgets unless the assembly sets them
        self.lease_seconds = lease_seconds
        # Fail fast: a user waiting on a stream is better served by a clear 503 than by a
        # minute of client-side retries.
        self.timeout = timeout
        self.histories = HistoryCache()
        self.reads = 0  # documents read by this process (tests)
        self.full_reads = 0  # whole histories read by this process (tests, logs)

    @property
    def retry(self) -> Retry:
        return retry_within(self.timeout)

    # Paths -------------------------------------------------------------------------------

    def session(self, session_id: str) -> Any:
        return self.db.collection("sessions").document(session_id)

    def step(self, session_id: str, step_id: str) -> Any:
        return self.session(session_id).collection("steps").document(step_id)

    def messages(self, session_id: str, step_id: str) -> Any:
        return self.step(session_id, step_id).collection("messages")

    def rate(self, uid: str) -> Any:
        return self.db.collection("rateLimits").document(uid)

    def step_field(self, step_id: str, name: str) -> str:
        """`steps.<stepId>.<name>` on the head, quoted: step ids may hold dots."""
        return self.db.field_path("steps", step_id, name)

    # Locks -------------------------------------------------------------------------------

    def session_lock(self, session_id: str) -> threading.Lock:
        """The session's lock in this process (see `_STEP_LOCKS`)."""
        return _STEP_LOCKS[hash(session_id) % len(_STEP_LOCKS)]

    # Reads -------------------------------------------------------------------------------

    def get_all(self, refs: list[Any]) -> dict[str, Any]:
        """Documents by path, in one round trip (a missing one is a snapshot that does not
        exist, billed as a read)."""
        try:
            snaps = list(self.db.get_all(refs, retry=self.retry, timeout=self.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += len(snaps)
        return {snap.reference.path: snap for snap in snaps}

    def since(
        self,
        session_id: str,
        step_id: str,
        seq: int | None,
        below: int | None = None,
        at: datetime | None = None,
    ) -> list[Message]:
        """The step's messages numbered above `seq` (and below `below`), as they were `at` a
        time; all of them, oldest first, for None."""
        messages = self.messages(session_id, step_id)
        if seq is None:
            query = messages.order_by("createdAt")
        else:
            query = messages.where(filter=FieldFilter("seq", ">", seq))
            if below is not None:
                query = query.where(filter=FieldFilter("seq", "<", below))
        try:
            # Whole microseconds: what Firestore takes as a read time within the last hour.
            read_time = None if at is None else datetime.combine(at.date(), at.timetz())
            docs = list(query.stream(retry=self.retry, timeout=self.timeout, read_time=read_time))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += max(1, len(docs))
        if seq is None:
            self.full_reads += 1
            log.info(
                "history read",
                extra={"fields": {"sessionId": session_id, "stepId": step_id, "count": len(docs)}},
            )
        return [documents.message(d, self.lease_seconds) for d in docs]
