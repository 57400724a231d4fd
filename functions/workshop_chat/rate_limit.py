"""Firestore: the per-user rate limit on turns, shared by every instance."""

from __future__ import annotations

import threading
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from . import documents
from .domain import StoreUnavailable
from .firestore_access import FirestoreAccess

_RATE_LOCKS = tuple(threading.Lock() for _ in range(64))


class RateLimiter:
    """Counts in `rateLimits/{uid}`. The client, retry and timeout come in `access`."""

    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access

    def take_turn_token(self, uid: str, per_minute: int, now: float) -> int | None:
        """A fixed one-minute window per user, shared by every instance through Firestore."""
        access = self.access
        ref = access.db.collection("rateLimits").document(uid)

        @firestore.transactional
        def take(tx: Any) -> int | None:
            snap = ref.get(transaction=tx, retry=access.retry, timeout=access.timeout)
            data = snap.to_dict() if snap.exists else {}
            start = float(data.get("windowStart", 0.0))
            count = int(data.get("count", 0))
            if now - start >= 60.0:
                start, count = now, 0
            if count >= per_minute:
                return max(1, int(start + 60.0 - now + 0.999))
            expire = documents.ts(start + 120.0)
            tx.set(ref, {"windowStart": start, "count": count + 1, "expireAt": expire})
            return None

        # Concurrent transactions on one document abort each other: a burst of 10 parallel
        # requests from one user exhausted the 5 attempts. Serialize them within this process
        # (striped locks, so memory stays flat); across instances contention stays rare.
        lock = _RATE_LOCKS[hash(uid) % len(_RATE_LOCKS)]
        try:
            with lock:
                return take(access.db.transaction())
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        except ValueError:  # "failed to commit in 5 attempts": a burst, so over the limit
            return 1
