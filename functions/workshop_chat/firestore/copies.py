"""This process's copies of step histories, bounded by count and by bytes.

A copy is valid as of a sequence number: every write that adds or replaces messages in a step
takes the next numbers from the session document (`steps.<id>.seq`) in the same atomic write, so
"what changed since I looked" is a query for `seq > n`. Replies being written (checkpoints,
finals) keep their number; a copy re-reads the ones it holds unfinished. `firestore_access` says
how a turn validates a copy in one round trip.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..chat.domain import RECENT, UNSETTLED, Message


@dataclass(frozen=True)
class Copy:
    """One step's messages as this process last saw them, oldest first."""

    incarnation: str  # the session's: a deleted and re-created session never matches
    seq: int  # every message numbered up to here is in `messages`
    cuts: int  # edits and regenerates that deleted messages, as of `seq`
    messages: tuple[Message, ...]
    # Who could write in the session when it was looked at: only their hints are read ahead.
    writers: frozenset[str] = frozenset()

    @property
    def unfinished(self) -> list[str]:
        """Replies this copy holds as streaming or waiting: they may have moved since."""
        return [m.id for m in self.messages if m.status in UNSETTLED]

    def ahead(self, seen: Sequence[str], uid: str) -> list[str]:
        """The messages a client says it holds that this copy lacks: read beside the head, they
        spare the look its second round trip when the step moved. A hint, never trusted: only
        what the head then lists as changed is taken, and a caller who could not send a turn
        when this process last looked makes no read of theirs."""
        if uid not in self.writers:
            return []
        held = {m.id for m in self.messages}
        # At most what a head remembers: more than that is asked for by number anyway.
        return [i for i in dict.fromkeys(seen) if i not in held][-RECENT:]

    def size(self) -> int:
        return sum(len(m.text) + len(m.reasoning) + 200 for m in self.messages)


def brought_up(
    copy: Copy, read: list[Message], gone: set[str], cuts: int, cut_after: float
) -> list[Message]:
    """`copy` with what a look read since (`read`: changed or new messages; `gone`: ids read
    that no longer exist), and at most one cut that deleted what was created after
    `cut_after`, oldest first. Whoever calls this checked that one cut covers the gap."""
    by_id = {m.id: m for m in copy.messages if m.id not in gone}
    fresh = {m.id for m in read}
    by_id.update((m.id, m) for m in read)
    if cuts != copy.cuts:
        by_id = {i: m for i, m in by_id.items() if i in fresh or m.created_at <= cut_after}
    return sorted(by_id.values(), key=lambda m: m.created_at)


class HistoryCache:
    """Copies by (session, step), least recently used first out."""

    def __init__(self, count: int = 2048, size_bytes: int = 64 << 20) -> None:
        self.count = count
        self.size_bytes = size_bytes
        self._items: OrderedDict[tuple[str, str], Copy] = OrderedDict()
        self._sizes: dict[tuple[str, str], int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Copy | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], copy: Copy) -> None:
        size = copy.size()
        with self._lock:
            self._drop(key)
            if size > self.size_bytes:
                return
            self._items[key] = copy
            self._sizes[key] = size
            self._total += size
            while len(self._items) > self.count or self._total > self.size_bytes:
                self._drop(next(iter(self._items)))

    def settle(self, key: tuple[str, str], reply_id: str, **stored: Any) -> None:
        """Our own final write of a reply landed: the copy holds it as stored, with no read
        (its number does not move, so no other process would learn of it otherwise)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            messages = tuple(replace(m, **stored) if m.id == reply_id else m for m in item.messages)
            self._items[key] = replace(item, messages=messages)

    def forget_writer(self, key: tuple[str, str], uid: str) -> None:
        """A look found `uid` may not write in the session any more: its hints go unread, in
        whichever copy is held now (another thread may have put a newer one)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and uid in item.writers:
                self._items[key] = replace(item, writers=item.writers - {uid})

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._drop(key)

    def drop_session(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == session_id]:
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        if self._items.pop(key, None) is not None:
            self._total -= self._sizes.pop(key, 0)
