"""What a process lets in before it reads a body: request bytes in flight, and who keeps sending
what gets refused.

A chat body may be 16 MiB of base64, and reading, parsing and decoding it costs about three
times that in memory. Sixty such requests at once would take an instance past its memory and
every stream on it down. So a body is admitted only while the bytes being read or decoded in
this process stay within `process_bytes`, and one user's within `user_bytes` (one request as
large as any may be); past either, the answer is immediate: `503 busy` for the process,
`429 busy` for the user. Refused requests (any 4xx from the chat route) count against the
user's minute as turns do, here in the process: one who keeps sending bad bodies is refused
before the next is read. The refusal that uses the minute up also marks the user's stored
minute as used (`Turns.spend_minute`), so their turns wait on every instance too. A user may
also follow only `FOLLOWERS_PER_USER` replies at once (each holds a thread and polls the store).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..chat.errors import RateLimited, Unavailable

_REMEMBERED = 10_000  # users whose refusals a process keeps, least recent out
FOLLOWERS_PER_USER = 8  # resumed streams one user may hold open in a process


class Admission:
    def __init__(self, process_bytes: int, user_bytes: int, refusals_per_minute: int) -> None:
        self.process_bytes = process_bytes
        self.user_bytes = user_bytes
        self.refusals_per_minute = refusals_per_minute
        self._lock = threading.Lock()
        self._total = 0
        self._users: dict[str, int] = {}
        self._refused: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._followers: dict[str, int] = {}
        self.peak = 0  # the most bytes admitted at once (tests, logs)

    @contextmanager
    def admit(self, uid: str, size: int) -> Iterator[None]:
        """Hold `size` bytes for `uid` while the body is read and decoded."""
        now = time.monotonic()
        with self._lock:
            start, count = self._refused.get(uid, (now, 0))
            if self.refusals_per_minute and now - start < 60 and count >= self.refusals_per_minute:
                wait = max(1, int(start + 60 - now + 0.999))
                raise RateLimited("rate_limited", "too many refused requests; wait a moment", wait)
            if self._users.get(uid, 0) + size > self.user_bytes:
                raise RateLimited("busy", "your earlier requests are still being read", 1)
            if self._total + size > self.process_bytes:
                raise Unavailable("busy", "the service is busy; try again", 1)
            self._total += size
            self._users[uid] = self._users.get(uid, 0) + size
            self.peak = max(self.peak, self._total)
        try:
            yield
        finally:
            with self._lock:
                self._total -= size
                left = self._users[uid] - size
                if left:
                    self._users[uid] = left
                else:
                    del self._users[uid]

    def refused(self, uid: str) -> bool:
        """Count a refused request against `uid`'s minute; True when this one used the minute
        up (once a minute), so that the store can say so to every instance."""
        now = time.monotonic()
        with self._lock:
            start, count = self._refused.pop(uid, (now, 0))
            if now - start >= 60:
                start, count = now, 0
            self._refused[uid] = (start, count + 1)
            while len(self._refused) > _REMEMBERED:
                self._refused.popitem(last=False)
            return count + 1 == self.refusals_per_minute

    def follower(self, uid: str) -> Slot:
        """One of `uid`'s follower streams; `release` it when the stream ends."""
        with self._lock:
            held = self._followers.get(uid, 0)
            if held >= FOLLOWERS_PER_USER:
                raise RateLimited("too_many_streams", "close a stream you are following first", 1)
            self._followers[uid] = held + 1
        return Slot(lambda: self._leave(uid))

    def _leave(self, uid: str) -> None:
        with self._lock:
            left = self._followers[uid] - 1
            if left:
                self._followers[uid] = left
            else:
                del self._followers[uid]


class Slot:
    """Something held until `release`, which may be called any number of times."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back: Callable[[], None] | None = give_back
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()
