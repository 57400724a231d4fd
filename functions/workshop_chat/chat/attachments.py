"""Files in the conversation: stored before any document names them, sent on to Gemini.

A new message's files are uploaded to Cloud Storage first, then the claim's commit writes the
message with references to them, so a crash in between leaves at most an object nobody names,
never a document that points at nothing. The model gets each file in its user turn: inline
bytes with an API key, the `gs://` object on Vertex AI; earlier files keep going while they fit
`HISTORY_MAX_FILE_BYTES`, newest first, and a short note takes the place of the rest.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .domain import FileRef, NewFile
from .errors import StoreUnavailable
from .ports import Bucket, FileParts

log = logging.getLogger("workshop_chat.chat.attachments")

MIB = 1 << 20
# Images and PDFs Gemini reads natively, and plain text.
DEFAULT_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
    "application/pdf",
    "text/plain",
)
# What a file part of a request may take beside its data: URL: its keys, type and name.
FILE_PART_ROOM = 1024


@dataclass(frozen=True)
class FileLimits:
    """What one message may carry. The defaults keep a request (base64 adds a third) well
    under Cloud Run's 32 MiB; config.py reads each from the environment."""

    max_files: int = 4
    max_file_bytes: int = 5 * MIB
    max_total_bytes: int = 10 * MIB
    allowed_types: tuple[str, ...] = DEFAULT_TYPES


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a path segment: {value!r}")
    return value


def session_prefix(session_id: str) -> str:
    return f"sessions/{_segment(session_id)}/"


def message_prefix(session_id: str, step_id: str, message_id: str) -> str:
    step, message = _segment(step_id), _segment(message_id)
    return f"{session_prefix(session_id)}steps/{step}/messages/{message}/"


def object_path(session_id: str, step_id: str, message_id: str, index: int, sha256: str) -> str:
    """sessions/<s>/steps/<t>/messages/<messageId>/<n>-<hash>: the message's own place.

    The name carries the bytes' hash, so a path only ever holds one content: two requests
    racing with different bytes for one message (two tabs editing it, say) can never overwrite
    the object the winner's document names, and a re-send finds its own object in place.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("not a sha256 hex digest")
    return f"{message_prefix(session_id, step_id, message_id)}{int(index)}-{sha256[:16]}"


@dataclass(frozen=True)
class FileSettings:
    history_max_file_bytes: int
    # On Vertex AI the model reads the objects itself: the bucket they are in.
    vertex_bucket: str | None = None
    # Bytes of recent files kept in memory, so later turns send them without a download.
    cache_bytes: int = 64 << 20


class _Bytes:
    """Recently uploaded or read file bytes by sha256, bounded by their total size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            data = self._items.get(sha256)
            if data is not None:
                self._items.move_to_end(sha256)
            return data

    def put(self, sha256: str, data: bytes) -> None:
        with self._lock:
            if sha256 in self._items or len(data) > self.limit:
                return
            self._items[sha256] = data
            self._size += len(data)
            while self._size > self.limit:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)


class Attachments:
    def __init__(self, files: Bucket, settings: FileSettings) -> None:
        self.files = files
        self.settings = settings
        self._bytes = _Bytes(settings.cache_bytes)

    @property
    def model_reads_bucket(self) -> bool:
        """On Vertex AI the model reads the objects, so they must be stored before it is asked."""
        return bool(self.settings.vertex_bucket)

    def name(
        self, key: tuple[str, str], message_id: str, new: tuple[NewFile, ...]
    ) -> tuple[FileRef, ...]:
        """The message's files as its document will name them (a path is a function of the
        bytes, so nothing is asked of the bucket); the bytes are kept for the model."""
        refs = []
        for part in new:
            path = object_path(key[0], key[1], message_id, part.index, part.sha256)
            self._bytes.put(part.sha256, part.data)
            refs.append(
                FileRef(part.index, part.media_type, part.filename, part.size, part.sha256, path)
            )
        return tuple(refs)

    def upload(self, new: tuple[NewFile, ...], named: tuple[FileRef, ...]) -> None:
        """Store the message's files where `name` put them. The same bytes at the same path
        are not uploaded again, so a re-sent message changes nothing in the bucket."""
        for part, ref in zip(new, named, strict=True):
            self.files.put(ref.path, part.data, part.media_type, part.sha256)

    def for_model(self, files: list[tuple[FileRef, ...]]) -> FileParts:
        """Gemini parts for each content's files, newest first within the byte budget.

        `files[i]` are the files of contents[i]; the last content's files always go.
        """
        budget = self.settings.history_max_file_bytes
        parts: FileParts = {}
        for index in range(len(files) - 1, -1, -1):
            for ref in files[index]:
                newest = index == len(files) - 1
                part = self._part(ref) if newest or ref.size <= budget else None
                if part is not None:
                    budget -= ref.size
                else:
                    part = {"text": f"[{ref.filename} ({ref.media_type}) was attached here.]"}
                parts.setdefault(index, []).append(part)
        return parts

    def _part(self, ref: FileRef) -> dict[str, Any] | None:
        if self.settings.vertex_bucket:
            uri = f"gs://{self.settings.vertex_bucket}/{ref.path}"
            return {"fileData": {"mimeType": ref.media_type, "fileUri": uri}}
        data = self._bytes.get(ref.sha256)
        if data is None:
            try:
                found = self.files.get(ref.path, ref.sha256)
            except StoreUnavailable:
                found = None
            if found is None:
                return None
            data = found[0]
            self._bytes.put(ref.sha256, data)
        encoded = base64.b64encode(data).decode()
        return {"inlineData": {"mimeType": ref.media_type, "data": encoded}}

    def read(self, ref: FileRef) -> bytes | None:
        found = self.files.get(ref.path, ref.sha256)
        return found[0] if found else None

    def forget(
        self, key: tuple[str, str], message_ids: tuple[str, ...], paths: tuple[str, ...]
    ) -> None:
        """After an edit or a regenerate committed: the objects nothing names any more."""
        try:
            for message_id in message_ids:
                self.files.delete_prefix(message_prefix(key[0], key[1], message_id))
            for path in paths:
                self.files.delete(path)
        except StoreUnavailable:
            log.warning("file clean-up failed", extra={"fields": {"objects": len(paths)}})

    def forget_session(self, session_id: str) -> None:
        self.files.delete_prefix(session_prefix(session_id))
