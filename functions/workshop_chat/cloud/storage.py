"""Cloud Storage: the bytes of a message's files, under the message's own path.

`FileStore` writes, reads and deletes objects in a bucket it is given by name; it never creates
or looks up a bucket (deploy.sh makes it, and grants the function access to it alone). Firestore
keeps only a reference to each object. Locally, STORAGE_EMULATOR_HOST points the client at an
emulator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import google.cloud.storage as storage
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

from ..chat.errors import StoreUnavailable

# Every failure to reach the bucket; requests' connection errors are OSErrors.
_FAILURES = (
    gexc.GoogleAPICallError,
    gexc.RetryError,
    auth_exc.GoogleAuthError,
    DataCorruption,
    OSError,
)


def make_client(project: str) -> storage.Client:
    """A google-cloud-storage client; it honours STORAGE_EMULATOR_HOST by itself."""
    return storage.Client(project=project)


class FileStore:
    """File objects in one bucket. Every failure to reach it is `StoreUnavailable`."""

    def __init__(
        self,
        client: storage.Client | Callable[[], storage.Client],
        bucket: str,
        timeout: float = 30.0,
    ) -> None:
        # A client, or how to make one when the first file comes: building it reads the
        # environment's credentials, which a function that never sees a file does not need.
        self._client = client
        self._bucket_name = bucket
        self._bucket_handle: Any = None
        self._timeout = timeout
        # Every call here may be repeated: a put of the same bytes to the same path leaves the
        # same object, so uploads are retried too (the library retries them only when they carry
        # a generation precondition, which the emulator would not enforce anyway).
        self._retry = DEFAULT_RETRY.with_timeout(timeout)

    @property
    def _bucket(self) -> Any:
        if self._bucket_handle is None:
            client = self._client() if callable(self._client) else self._client
            self._bucket_handle = client.bucket(self._bucket_name)  # a name: no request
        return self._bucket_handle

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except _FAILURES as exc:
            raise StoreUnavailable(f"cloud storage {what} failed: {type(exc).__name__}") from exc

    def put(self, path: str, data: bytes, media_type: str, sha256: str | None = None) -> bool:
        """Store `data` at `path`; False when that object already holds these bytes.

        The object's sha256 is kept in its metadata: a re-send finds it and writes nothing, so
        the object (and its generation) stays as it was. Different bytes replace it (an edit).
        """
        digest = sha256 or hashlib.sha256(data).hexdigest()
        with self._calling("upload"):
            found = self._bucket.get_blob(path, timeout=self._timeout, retry=self._retry)
            if (
                found is not None
                and found.size == len(data)
                and found.content_type == media_type
                and (found.metadata or {}).get("sha256") == digest
            ):
                return False
            blob = self._bucket.blob(path)
            blob.metadata = {"sha256": digest}
            blob.upload_from_string(
                data, content_type=media_type, timeout=self._timeout, retry=self._retry
            )
        return True

    def get(self, path: str, sha256: str | None = None) -> tuple[bytes, str] | None:
        """The bytes and their type, in one request; None when there is no such object, or
        when `sha256` is given and the bytes are not the ones it names. Uploads carry no
        precondition the emulator would enforce, so a reader checks what its document says."""
        with self._calling("download"):
            blob = self._bucket.blob(path)
            try:
                data = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
            except gexc.NotFound:
                return None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            return None
        return data, blob.content_type or "application/octet-stream"

    def delete(self, path: str) -> None:
        """Delete one object; one that is already gone is fine."""
        with self._calling("delete"):
            try:
                self._bucket.blob(path).delete(timeout=self._timeout, retry=self._retry)
            except gexc.NotFound:
                return

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (which ends in `/`); returns how many there were.

        Objects deleted meanwhile by someone else are fine: the end state is the same.
        """
        if not prefix.endswith("/") or not prefix.strip("/") or prefix.startswith("/"):
            raise ValueError(f"not a folder prefix: {prefix!r}")
        with self._calling("delete"):
            blobs = list(
                self._bucket.list_blobs(prefix=prefix, timeout=self._timeout, retry=self._retry)
            )
            self._bucket.delete_blobs(
                blobs, on_error=lambda _blob: None, timeout=self._timeout, retry=self._retry
            )
        return len(blobs)
