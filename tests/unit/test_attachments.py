"""Which files a model request carries: newest first within the byte budget, notes for the rest.

The bucket is an in-memory stand-in with the `Bucket` port's contract (the real adapter runs against
the Cloud Storage emulator in tests/test_files.py); it counts downloads, so the cache is seen
to work.
"""

from __future__ import annotations

import base64
import hashlib

from workshop_chat.chat.attachments import Attachments, FileSettings
from workshop_chat.chat.domain import FileRef, NewFile

BUDGET = 12 << 20  # HISTORY_MAX_FILE_BYTES's default


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.downloads = 0

    def put(self, path: str, data: bytes, media_type: str, sha256: str | None = None) -> bool:
        if self.objects.get(path) == (data, media_type):
            return False
        self.objects[path] = (data, media_type)
        return True

    def get(self, path: str, sha256: str | None = None) -> tuple[bytes, str] | None:
        self.downloads += 1
        found = self.objects.get(path)
        if found is None or (sha256 and hashlib.sha256(found[0]).hexdigest() != sha256):
            return None
        return found


def part(data: bytes, index: int = 0, media_type: str = "image/png") -> NewFile:
    sha = hashlib.sha256(data).hexdigest()
    return NewFile(index, media_type, f"f{index}.png", data, sha, len(data))


def stored(attachments: Attachments, message_id: str, *data: bytes) -> tuple[FileRef, ...]:
    new = tuple(part(d, n) for n, d in enumerate(data))
    named = attachments.name(("s1", "empathize"), message_id, new)
    attachments.upload(new, named)
    return named


def inline(data: bytes) -> dict:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}


def note(ref: FileRef) -> dict:
    return {"text": f"[{ref.filename} ({ref.media_type}) was attached here.]"}


def test_the_newest_files_go_first_and_the_rest_become_notes() -> None:
    bucket = Bucket()
    attachments = Attachments(bucket, FileSettings(history_max_file_bytes=250))
    a, b, c = b"a" * 100, b"b" * 100, b"c" * 100
    (ra,) = stored(attachments, "m1", a)
    (rb,) = stored(attachments, "m2", b)
    (rc,) = stored(attachments, "m3", c)
    parts = attachments.for_model([(ra,), (), (rb,), (), (rc,)])
    assert parts == {4: [inline(c)], 2: [inline(b)], 0: [note(ra)]}


def test_the_last_message_s_files_always_go_even_past_the_budget() -> None:
    attachments = Attachments(Bucket(), FileSettings(history_max_file_bytes=10))
    refs = stored(attachments, "m1", b"x" * 50, b"y" * 50)
    (older,) = stored(attachments, "m0", b"z")
    assert attachments.for_model([(older,), refs]) == {
        1: [inline(b"x" * 50), inline(b"y" * 50)],
        0: [note(older)],
    }


def test_files_are_read_once_then_served_from_memory_within_its_bound() -> None:
    bucket = Bucket()
    writer = Attachments(bucket, FileSettings(BUDGET))
    (ref,) = stored(writer, "m1", b"p" * 100)
    reader = Attachments(bucket, FileSettings(BUDGET, cache_bytes=150))  # another instance
    for _ in range(3):
        assert reader.for_model([(ref,)]) == {0: [inline(b"p" * 100)]}
    assert bucket.downloads == 1
    (other,) = stored(writer, "m2", b"q" * 100)
    reader.for_model([(other,)])  # evicts the first: 200 bytes do not fit in 150
    reader.for_model([(ref,)])
    assert bucket.downloads == 3


def test_a_file_gone_from_the_bucket_or_changed_becomes_a_note() -> None:
    bucket = Bucket()
    (ref,) = stored(Attachments(bucket, FileSettings(BUDGET)), "m1", b"original")
    bucket.objects[ref.path] = (b"tampered", "image/png")
    assert Attachments(bucket, FileSettings(BUDGET)).for_model([(ref,), ()]) == {0: [note(ref)]}
    del bucket.objects[ref.path]
    assert Attachments(bucket, FileSettings(BUDGET)).for_model([(ref,), ()]) == {0: [note(ref)]}


def test_on_vertex_ai_the_model_gets_the_objects_uri_and_nothing_is_downloaded() -> None:
    bucket = Bucket()
    attachments = Attachments(bucket, FileSettings(BUDGET, vertex_bucket="b.example"))
    (ref,) = stored(attachments, "m1", b"v" * 10)
    uri = f"gs://b.example/{ref.path}"
    assert attachments.for_model([(ref,)]) == {
        0: [{"fileData": {"mimeType": "image/png", "fileUri": uri}}]
    }
    assert bucket.downloads == 0


def test_a_re_stored_message_writes_nothing_new() -> None:
    bucket = Bucket()
    attachments = Attachments(bucket, FileSettings(BUDGET))
    first = stored(attachments, "m1", b"same", b"bytes")
    again = stored(attachments, "m1", b"same", b"bytes")
    assert first == again and len(bucket.objects) == 2
    assert [r.n for r in first] == [0, 1]
    assert first[0].path.startswith("sessions/s1/steps/empathize/messages/m1/0-")


def test_naming_a_message_s_files_asks_nothing_of_the_bucket_and_uploading_stores_them() -> None:
    bucket = Bucket()
    attachments = Attachments(bucket, FileSettings(BUDGET))
    new = (part(b"wall", 0),)
    named = attachments.name(("s1", "empathize"), "m1", new)
    (ref,) = named
    assert bucket.objects == {} and bucket.downloads == 0
    assert attachments.for_model([(ref,)]) == {0: [inline(b"wall")]}  # from memory
    attachments.upload(new, named)
    assert bucket.objects == {ref.path: (b"wall", "image/png")}
    assert not attachments.model_reads_bucket
    assert Attachments(bucket, FileSettings(BUDGET, vertex_bucket="b")).model_reads_bucket
