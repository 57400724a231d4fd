"""What the Firestore adapters share: the client, its retry and timeout, the documents' paths,
the per-session write locks, what this process remembers of sessions, and the claim a reply's
writes are made under.

Layout: sessions/{sessionId}/steps/{stepId}/messages/{messageId}. Every write that changes a
step's history also writes the step document, so the step's update time is the history's
version. An instance keeps histories in memory with the version it knows, and its next write
to the step carries that version as a precondition: the warm path reads nothing, and a failed
precondition means someone else wrote, so the history is read again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore

from . import documents
from .domain import Message, StoreUnavailable
from .history_cache import HistoryCache
from .memory import Outcome

# Writes to a session's documents (the session, its steps) from this process go one at a time,
# each conditional on the version the last one left: this process's own claims, finals and
# summaries then never fail each other's preconditions. Striped, so memory stays flat.
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


class FirestoreAccess:
    """One per process, handed to each Firestore adapter. The client is injected (emulator
    in tests)."""

    def __init__(
        self, db: firestore.Client, lease_seconds: float = 8.0, timeout: float = 5.0
    ) -> None:
        self.db = db
        self.lease_seconds = lease_seconds
        # Fail fast: a user waiting on a stream is better served by a clear 503 than by a
        # minute of client-side retries.
        self.timeout = timeout
        self.histories = HistoryCache()
        self.owners: dict[str, str] = {}
        self.session_states: dict[str, tuple[datetime, dict[str, Outcome]]] = {}
        self.reads = 0  # document reads issued by this process (tests, benchmark)

    @property
    def retry(self) -> Retry:
        """Retries of UNAVAILABLE and the like, all within one `timeout`."""
        return Retry(initial=0.05, maximum=0.5, multiplier=2.0, timeout=self.timeout)

    # Paths -------------------------------------------------------------------------------

    def session(self, session_id: str) -> Any:
        return self.db.collection("sessions").document(session_id)

    def step(self, session_id: str, step_id: str) -> Any:
        return self.session(session_id).collection("steps").document(step_id)

    def messages(self, session_id: str, step_id: str) -> Any:
        return self.step(session_id, step_id).collection("messages")

    # Locks -------------------------------------------------------------------------------

    def session_lock(self, session_id: str) -> threading.Lock:
        """The session's lock in this process (see `_STEP_LOCKS`)."""
        return _STEP_LOCKS[hash(session_id) % len(_STEP_LOCKS)]

    def session_locks(self, session_ids: Iterable[str]) -> list[threading.Lock]:
        """The locks of these sessions, each once, in one order: two holders never wait on
        each other."""
        stripes = sorted({_STEP_LOCKS.index(self.session_lock(s)) for s in session_ids})
        return [_STEP_LOCKS[stripe] for stripe in stripes]

    # What this process remembers -----------------------------------------------------------

    def remember_owner(self, session_id: str, uid: str) -> None:
        """Owners never change, so they are cached; the bound keeps memory flat."""
        if len(self.owners) >= 100_000:
            self.owners.clear()
        self.owners[session_id] = uid

    def remember_session(self, snap: Any) -> None:
        """The session document's outcomes mirror, with the version it was read or written at."""
        if len(self.session_states) >= 10_000:
            self.session_states.clear()
        self.session_states[snap.id] = (snap.update_time, documents.outcomes(snap.to_dict() or {}))

    def forget(self, key: tuple[str, str]) -> None:
        self.histories.drop(key)
        self.owners.pop(key[0], None)
        self.session_states.pop(key[0], None)

    # Reads -------------------------------------------------------------------------------

    def load(self, session_id: str, step_id: str) -> list[Message]:
        """The step's messages, oldest first."""
        query = self.messages(session_id, step_id).order_by("createdAt")
        try:
            docs = list(query.stream(retry=self.retry, timeout=self.timeout))
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.reads += max(1, len(docs))
        return [documents.message(d, self.lease_seconds) for d in docs]
