"""Firestore: the workshop board, `sessions/<s>/board/<itemId>`.

Every write goes in one batch with a touch of the session document (`boardVersion`) under a
precondition on the version just read: a write that races the session's delete (or lands on a
session marked as going) fails whole and writes nothing, so no item outlives its session.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from ..chat.board import KINDS, MAX_BOARD_ITEMS, BoardError, BoardItem, Change
from ..chat.errors import NotFound, StoreUnavailable
from . import documents
from .access import FirestoreAccess

_ATTEMPTS = 4  # looks again when the session moved between the read and the write


_COPIES = 512  # sessions whose board a process keeps, least recently used out


class BoardStore:
    def __init__(self, access: FirestoreAccess) -> None:
        self.access = access
        # session -> (boardVersion, items): a turn reads the board only when it moved.
        self._copies: OrderedDict[str, tuple[str, list[BoardItem]]] = OrderedDict()
        self._lock = threading.Lock()

    def _items(self, session_id: str) -> Any:
        return self.access.session(session_id).collection("board")

    def items(self, session_id: str, version: str | None = None) -> list[BoardItem]:
        with self._lock:
            copy = self._copies.get(session_id)
            if version is not None and copy is not None and copy[0] == version:
                self._copies.move_to_end(session_id)
                return copy[1]
        items = self._read(session_id)
        if version is not None:
            with self._lock:
                self._copies[session_id] = (version, items)
                while len(self._copies) > _COPIES:
                    self._copies.popitem(last=False)
        return items

    def _read(self, session_id: str) -> list[BoardItem]:
        try:
            docs = list(
                self._items(session_id)
                .limit(MAX_BOARD_ITEMS + 50)
                .stream(retry=self.access.retry, timeout=self.access.timeout)
            )
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.access.reads += max(1, len(docs))
        return [item for d in docs if (item := _item(d)) is not None]

    def add(self, session_id: str, items: list[BoardItem]) -> None:
        access = self.access
        head_ref = access.session(session_id)
        refs = {item.id: self._items(session_id).document(item.id) for item in items}
        for _ in range(_ATTEMPTS):
            found = access.get_all([head_ref, *refs.values()])
            head = self._live_head(found[head_ref.path])
            new = [item for item in items if not found[refs[item.id].path].exists]
            if not new:
                return  # a retried call: every item is there already
            if self._count(session_id) + len(new) > MAX_BOARD_ITEMS:
                raise BoardError("board_full", f"the board holds at most {MAX_BOARD_ITEMS} items")
            batch = access.db.batch()
            for item in new:
                batch.create(refs[item.id], _fields(item))
            self._touch(batch, head_ref, head)
            if self._commit(batch):
                return
        raise StoreUnavailable()

    def change(self, session_id: str, change: Change, by: str, now: float) -> BoardItem:
        access = self.access
        head_ref = access.session(session_id)
        ref = self._items(session_id).document(change.item_id)
        for _ in range(_ATTEMPTS):
            found = access.get_all([head_ref, ref])
            head = self._live_head(found[head_ref.path])
            snap = found[ref.path]
            item = _item(snap)
            if item is None:
                raise NotFound("item_not_found", "no board item with that id")
            changed = BoardItem(
                item.id,
                item.kind,
                change.title if change.title is not None else item.title,
                change.detail if change.detail is not None else item.detail,
                item.step_id,
                item.created_by,
                item.source_message_id,
                item.created_at,
                now,
                item.version + 1,
            )
            batch = access.db.batch()
            fields = {
                "title": changed.title,
                "detail": changed.detail,
                "updatedAt": documents.ts(now),
                "updatedBy": by,
                "version": changed.version,
            }
            option = access.db.write_option(last_update_time=snap.update_time)
            batch.update(ref, fields, option=option)
            self._touch(batch, head_ref, head)
            if self._commit(batch):
                return changed
        raise StoreUnavailable()

    def remove(self, session_id: str, item_id: str) -> bool:
        access = self.access
        head_ref = access.session(session_id)
        ref = self._items(session_id).document(item_id)
        for _ in range(_ATTEMPTS):
            found = access.get_all([head_ref, ref])
            head = self._live_head(found[head_ref.path])
            if not found[ref.path].exists:
                return False
            batch = access.db.batch()
            batch.delete(ref, option=access.db.write_option(exists=True))
            self._touch(batch, head_ref, head)
            if self._commit(batch):
                return True
        raise StoreUnavailable()

    # ------------------------------------------------------------------------------------

    @staticmethod
    def _live_head(snap: Any) -> documents.Head:
        head = documents.head(snap)
        if not head.exists or head.deleting:
            raise NotFound("not_found", "no such session")
        return head

    def _count(self, session_id: str) -> int:
        try:
            counted = self._items(session_id).count()
            result = counted.get(retry=self.access.retry, timeout=self.access.timeout)
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        self.access.reads += 1
        return int(result[0][0].value)

    def _touch(self, batch: Any, head_ref: Any, head: documents.Head) -> None:
        option = self.access.db.write_option(last_update_time=head.version)
        batch.update(head_ref, {"boardVersion": firestore.Increment(1)}, option=option)

    def _commit(self, batch: Any) -> bool:
        """False when the session (or the item) moved since the read: look again."""
        try:
            batch.commit(retry=self.access.retry, timeout=self.access.timeout)
        except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound, gexc.Aborted):
            return False
        except gexc.GoogleAPIError as exc:
            raise StoreUnavailable() from exc
        return True


def _fields(item: BoardItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "title": item.title,
        "detail": item.detail,
        "stepId": item.step_id,
        "createdBy": item.created_by,
        "sourceMessageId": item.source_message_id,
        "createdAt": documents.ts(item.created_at),
        "updatedAt": documents.ts(item.updated_at),
        "version": item.version,
    }


def _item(snap: Any) -> BoardItem | None:
    """A stored item; None when missing, or when what is stored is no item (never shown)."""
    if not snap.exists:
        return None
    data = snap.to_dict() or {}
    kind = data.get("kind")
    if kind not in KINDS:
        return None
    return BoardItem(
        snap.id,
        kind,
        str(data.get("title") or ""),
        str(data.get("detail") or ""),
        str(data.get("stepId") or ""),
        str(data.get("createdBy") or ""),
        data.get("sourceMessageId"),
        documents.seconds(data.get("createdAt")),
        documents.seconds(data.get("updatedAt")),
        int(data.get("version") or 1),
    )
