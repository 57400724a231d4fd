"""This process's copies of step histories, bounded, each with the step version it is valid at.

In memory only; `firestore_access` says why a version is enough to know a copy is current.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from .domain import Message

History = tuple[datetime, list[Message]]
# What the cache holds per step: the version, the messages, and the step's `revision` token.
_Entry = tuple[datetime, list[Message], str | None]


class HistoryCache:
    """Histories by (session, step), bounded; each valid at the step version it records."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> History | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item[0], list(item[1])
            return None

    def put(
        self,
        key: tuple[str, str],
        version: datetime,
        messages: list[Message],
        revision: str | None,
    ) -> None:
        with self._lock:
            self._items[key] = (version, list(messages), revision)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def version(self, key: tuple[str, str]) -> datetime | None:
        with self._lock:
            item = self._items.get(key)
            return item[0] if item else None

    def revision(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            item = self._items.get(key)
            return item[2] if item else None

    def advance(
        self,
        key: tuple[str, str],
        old: datetime | None,
        new: datetime,
        change: Callable[[list[Message]], list[Message]],
        revision: str | None = None,
    ) -> None:
        """Apply our own write, made with `old` as its precondition, to the cached history
        (`revision`: the token the write stored, if it stored one)."""
        with self._lock:
            item = self._items.get(key)
            if item is None or old is None or item[0] != old:
                self._items.pop(key, None)
                return
            self._items[key] = (new, change(list(item[1])), revision or item[2])

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)
