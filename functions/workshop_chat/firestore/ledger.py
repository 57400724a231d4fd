"""Firestore: the daily token ledger (`chat/budget.py` says what it bounds).

`budgets/<day>/budgetUsers/<uid>` holds what one user spent that UTC day; the project's spend is
spread over `budgets/<day>/budgetShards/<n>` so that 50 turns a second never queue on one document
(Firestore sustains about one write a second per document). A turn reads its user's document
with the session head, in the same round trip, when this process last read it more than
`refresh_seconds` ago; the project's total is one aggregation query per process every
`refresh_seconds`, in the background, so a turn never waits for it. Charges are increments
added to a write that happens anyway (a reply's final write, a summary's save): no round trip
of their own, and this process's own show at once. Either budget may thus be overrun by what
other instances spend in one refresh interval (for a user, at most the turns their per-minute
limit lets through in it), plus the replies in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.budget import DAY_SECONDS, Spend, utc_day
from ..chat.errors import StoreUnavailable
from .deadline import retry_within

log = logging.getLogger("workshop_chat.firestore.ledger")

SHARDS = 64  # > 50 turns a second at one write a second each
_USERS_KEPT = 10_000  # users whose spend a process remembers: about a MiB


class Ledger:
    def __init__(
        self,
        db: firestore.Client,
        user_limit: int,
        project_limit: int,
        refresh_seconds: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.db = db
        self.user_limit = user_limit
        self.project_limit = project_limit
        self.refresh_seconds = refresh_seconds
        self.timeout = timeout
        self._lock = threading.Lock()
        self._project: dict[str, int] = {}  # day -> total, as last summed
        # (uid, day) -> (tokens, when read): a user's document as last read, plus this
        # process's charges since. Bounded: the oldest go first.
        self._users: dict[tuple[str, str], tuple[int, float]] = {}
        self._summed_at = -float("inf")
        self._refreshing = False

    @property
    def on(self) -> bool:
        return bool(self.user_limit or self.project_limit)

    # Reads -------------------------------------------------------------------------------

    def _day(self, day: str) -> Any:
        return self.db.collection("budgets").document(day)

    def user_ref(self, uid: str, now: float) -> Any:
        return self._day(utc_day(now)).collection("budgetUsers").document(uid)

    def due(self, uid: str, now: float) -> bool:
        """Whether a turn reads its user's document (else `spend` takes what was last read)."""
        with self._lock:
            known = self._users.get((uid, utc_day(now)))
        return known is None or time.monotonic() - known[1] >= self.refresh_seconds

    def spend(self, uid: str, user_snap: Any, now: float) -> Spend:
        """What the caller's document (read with the head; None: as last read, with this
        process's charges since) and the project's last total say."""
        day = utc_day(now)
        with self._lock:
            if user_snap is not None:
                data = user_snap.to_dict() if user_snap.exists else None
                self._remember(uid, day, int((data or {}).get("tokens") or 0), time.monotonic())
            tokens = self._users.get((uid, day), (0, 0.0))[0]
        return Spend(day, tokens, self.project_total(day), self.user_limit, self.project_limit)

    def _remember(self, uid: str, day: str, tokens: int, read_at: float) -> None:
        self._users.pop((uid, day), None)
        self._users[(uid, day)] = (tokens, read_at)
        while len(self._users) > _USERS_KEPT:
            del self._users[next(iter(self._users))]

    def read(self, uid: str, now: float) -> Spend:
        """The caller's spend on its own (the usage route). A store that does not answer is a
        503, never "nothing spent"."""
        try:
            ref = self.user_ref(uid, now)
            snap = ref.get(retry=retry_within(self.timeout), timeout=self.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return self.spend(uid, snap, now)

    def project_total(self, day: str) -> int:
        """The project's spend as last summed; a sum is started in the background when it is
        older than `refresh_seconds` (the first one is waited for)."""
        with self._lock:
            stale = time.monotonic() - self._summed_at >= self.refresh_seconds
            first = day not in self._project
            start = stale and not self._refreshing and bool(self.project_limit)
            if start:
                self._refreshing = True
        if start and first:
            self._refresh(day)
        elif start:
            threading.Thread(target=self._refresh, args=(day,), daemon=True).start()
        with self._lock:
            return self._project.get(day, 0)

    def _refresh(self, day: str) -> None:
        shards = self._day(day).collection("budgetShards")
        try:
            total_of = shards.sum("tokens")
            summed = total_of.get(retry=retry_within(self.timeout), timeout=self.timeout)
            (result,) = summed[0]
            total = int(result.value or 0)
        except (gexc.GoogleAPIError, IndexError, ValueError):
            log.warning("project spend could not be summed; the last total stands")
            with self._lock:
                self._refreshing = False
            return
        with self._lock:
            self._project = {day: total}
            self._summed_at = time.monotonic()
            self._refreshing = False

    # Charges -----------------------------------------------------------------------------

    def charge(self, batch: Any, spent: dict[str, int], now: float) -> None:
        """Add each user's tokens to their document, and the sum to one random project shard,
        in `batch`: one write a document, as a BatchWrite demands (one user's many replies
        may end in the same batch). Each document says when it may be dropped (a TTL policy
        on `expireAt` cleans up)."""
        spent = {uid: n for uid, n in spent.items() if uid and n > 0}
        if not self.on or not spent:
            return
        day = utc_day(now)
        expire = datetime.fromtimestamp(now, UTC) + timedelta(seconds=2 * DAY_SECONDS)
        for uid, tokens in spent.items():
            fields = {"tokens": firestore.Increment(tokens), "expireAt": expire}
            batch.set(self.user_ref(uid, now), fields, merge=True)
        total = sum(spent.values())
        shard = self._day(day).collection("budgetShards").document(str(random.randrange(SHARDS)))
        batch.set(shard, {"tokens": firestore.Increment(total), "expireAt": expire}, merge=True)
        with self._lock:  # this process's own spend shows at once
            if day in self._project:
                self._project[day] += total
            for uid, tokens in spent.items():
                known = self._users.get((uid, day))
                if known is not None:
                    self._users[(uid, day)] = (known[0] + tokens, known[1])
