"""Files in a message: the file-part parser (pure), and the Cloud Storage adapter on the emulator.

The parser gets every refusal it knows, one code each, and hypothesis throws malformed data URLs
at it: it may only ever return checked files or raise one of our domain errors. The adapter runs
against gcp-storage-emulator, the same one dev.sh starts.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from workshop_chat.chat.attachments import (
    DEFAULT_TYPES,
    MIB,
    FileLimits,
    message_prefix,
    object_path,
    session_prefix,
)
from workshop_chat.chat.domain import NewFile
from workshop_chat.chat.errors import (
    ChatError,
    InvalidRequest,
    StoreUnavailable,
    TooLarge,
    UnsupportedMedia,
)
from workshop_chat.cloud.storage import FileStore
from workshop_chat.web.file_parts import MAX_FILENAME_CHARS, clean_filename, parse_files

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x01" * 500
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x02" * 100
HEIC = b"\x00\x00\x00\x18ftypheic" + b"\x03" * 100
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
TEXT = "Interview notes: the team wants fewer meetings. Ümlaut ✓\n".encode()
SAMPLES = {
    "image/png": PNG,
    "image/jpeg": JPEG,
    "image/webp": WEBP,
    "image/heic": HEIC,
    "image/heif": HEIC.replace(b"heic", b"mif1"),
    "application/pdf": PDF,
    "text/plain": TEXT,
}
SHA = hashlib.sha256(b"names the object's content").hexdigest()
CODES = {
    "too_many_files": InvalidRequest,
    "invalid_file": InvalidRequest,
    "unsupported_file_url": InvalidRequest,
    "invalid_data_url": InvalidRequest,
    "file_type_mismatch": InvalidRequest,
    "unsupported_file_type": UnsupportedMedia,
    "invalid_base64": InvalidRequest,
    "empty_file": InvalidRequest,
    "file_content_mismatch": InvalidRequest,
    "file_too_large": TooLarge,
    "files_too_large": TooLarge,
}


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def file_part(
    data: bytes = PNG, media_type: str = "image/png", filename: Any = "wall.png", **over: Any
) -> dict[str, Any]:
    part = {"type": "file", "mediaType": media_type, "url": data_url(data, media_type)}
    if filename is not None:
        part["filename"] = filename
    return {**part, **over}


def refusal(parts: list[Any], limits: FileLimits | None = None) -> ChatError:
    with pytest.raises(ChatError) as caught:
        parse_files(parts, limits or FileLimits())
    error = caught.value
    assert type(error) is CODES[error.code], f"{error.code} raised as {type(error).__name__}"
    assert error.message
    return error


# --- What is accepted -------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", DEFAULT_TYPES)
def test_every_default_type_arrives_byte_for_byte(media_type: str) -> None:
    data = SAMPLES[media_type]
    (parsed,) = parse_files([file_part(data, media_type, "x")])
    assert parsed.data == data
    assert parsed.size == len(data)
    assert parsed.sha256 == hashlib.sha256(data).hexdigest()
    assert parsed.media_type == media_type
    assert parsed.index == 0


def test_files_are_numbered_among_file_parts_and_other_parts_are_not_read() -> None:
    parts = [
        {"type": "text", "text": "Here is our wall"},
        file_part(PNG, "image/png", "wall.png"),
        {"type": "reasoning", "url": "https://example.com/never-fetched"},
        file_part(PDF, "application/pdf", "notes.pdf"),
    ]
    files = parse_files(parts)
    assert [(f.index, f.filename, f.media_type) for f in files] == [
        (0, "wall.png", "image/png"),
        (1, "notes.pdf", "application/pdf"),
    ]
    assert parse_files([{"type": "text", "text": "no files"}]) == ()


def test_media_types_are_compared_without_case_or_parameters() -> None:
    part = file_part(TEXT, "text/plain")
    part["mediaType"] = "Text/Plain; charset=utf-8"
    part["url"] = "data:TEXT/plain;charset=utf-8;BASE64," + base64.b64encode(TEXT).decode()
    (parsed,) = parse_files([part])
    assert parsed.media_type == "text/plain" and parsed.data == TEXT


def test_the_file_is_frozen_and_its_bytes_stay_out_of_its_repr() -> None:
    (parsed,) = parse_files([file_part()])
    assert isinstance(parsed, NewFile)
    with pytest.raises(AttributeError):
        parsed.size = 1  # type: ignore[misc]
    assert "\\x89PNG" not in repr(parsed) and parsed.sha256 in repr(parsed)


def test_exactly_the_limits_pass() -> None:
    limits = FileLimits(max_files=2, max_file_bytes=600, max_total_bytes=1200)
    blob = b"\x89PNG\r\n\x1a\n" + b"\x00" * 592  # 600 bytes
    files = parse_files([file_part(blob), file_part(blob)], limits)
    assert [f.size for f in files] == [600, 600]


def test_allowed_types_are_configurable() -> None:
    only_png = FileLimits(allowed_types=("image/png",))
    assert refusal([file_part(JPEG, "image/jpeg")], only_png).code == "unsupported_file_type"
    with_audio = FileLimits(allowed_types=(*DEFAULT_TYPES, "audio/mpeg"))
    (parsed,) = parse_files([file_part(b"ID3\x04anything", "audio/mpeg", "a.mp3")], with_audio)
    assert parsed.media_type == "audio/mpeg" and parsed.data == b"ID3\x04anything"


# --- Every refusal, with its own code ---------------------------------------------------------


def test_too_many_files_is_refused_before_any_is_read() -> None:
    broken = {"type": "file", "mediaType": "image/png", "url": "https://x.example/a.png"}
    assert refusal([file_part()] * 4 + [broken]).code == "too_many_files"
    assert len(parse_files([file_part()] * 4)) == 4


@pytest.mark.parametrize(
    "over",
    [
        {"mediaType": None},
        {"mediaType": 7},
        {"url": None},
        {"url": ["data:image/png;base64,AAAA"]},
        {"filename": 12},
        {"filename": {"name": "x"}},
    ],
)
def test_a_malformed_part_is_invalid_file(over: dict[str, Any]) -> None:
    assert refusal([file_part(**over)]).code == "invalid_file"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/wall.png",
        "http://169.254.169.254/computeMetadata/v1/",
        "gs://bucket/sessions/s/steps/t/messages/m/0",
        "blob:https://workshop.example/1234",
        "file:///etc/passwd",
        "/sessions/s1/steps/empathize/files/m1/0",
        "",
        " data:image/png;base64,AAAA",
    ],
)
def test_anything_but_a_data_url_is_refused(url: str) -> None:
    assert refusal([file_part(url=url)]).code == "unsupported_file_url"


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64",  # no comma
        "data:image/png," + "%89PNG",  # not base64
        "data:image/png;charset=x,AAAA",
        "data:base64,AAAA",
        "data:image/png;" + "x" * 300 + ";base64,AAAA",  # an absurd head
    ],
)
def test_a_malformed_data_url_is_refused(url: str) -> None:
    assert refusal([file_part(url=url)]).code == "invalid_data_url"


def test_a_type_that_differs_from_the_data_urls_is_refused() -> None:
    part = file_part(PNG, "image/png")
    part["url"] = data_url(PNG, "image/jpeg")
    assert refusal([part]).code == "file_type_mismatch"
    part["url"] = "data:;base64," + base64.b64encode(PNG).decode()  # RFC 2397: text/plain
    assert refusal([part]).code == "file_type_mismatch"


@pytest.mark.parametrize("media_type", ["text/html", "image/svg+xml", "application/zip", "x"])
def test_a_type_not_allowed_is_unsupported_media(media_type: str) -> None:
    error = refusal([file_part(b"<svg onload=alert(1)>", media_type)])
    assert error.code == "unsupported_file_type"
    assert "image/png" in error.message


@pytest.mark.parametrize(
    "payload",
    [
        "iVBORw0KGgo=AAAA",  # data after padding
        "iVBORw0KGgo",  # no padding
        "iVBO w0KGgo=",  # whitespace
        "iVBORw0K\nGo=",
        "iVBORw0K-_o=",  # the URL-safe alphabet
        "iVBORw0KGgé=",
        "=VBORw0KGgo=",
        "iVBORw0K=go=",
        "iVBORw0KGgo%3D",
    ],
)
def test_bad_base64_is_refused(payload: str) -> None:
    assert refusal([file_part(url="data:image/png;base64," + payload)]).code == "invalid_base64"


def test_an_empty_file_is_refused() -> None:
    assert refusal([file_part(url="data:image/png;base64,")]).code == "empty_file"


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (JPEG, "image/png"),
        (PNG, "image/jpeg"),
        (b"<html><script>alert(1)</script>", "image/png"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "image/webp"),
        (b"not a pdf at all", "application/pdf"),
        (b"\xff\xfeh\x00i\x00", "text/plain"),  # UTF-16
        (b"text with a \x00 inside", "text/plain"),
    ],
)
def test_bytes_that_are_not_the_declared_type_are_refused(data: bytes, media_type: str) -> None:
    assert refusal([file_part(data, media_type)]).code == "file_content_mismatch"


def test_a_file_over_the_limit_is_refused_before_it_is_decoded() -> None:
    limits = FileLimits(max_file_bytes=600)
    blob = b"\x89PNG\r\n\x1a\n" + b"\x00" * 593  # 601 bytes
    assert refusal([file_part(blob)], limits).code == "file_too_large"
    # Invalid base64 of that length: the size decides first, nothing is decoded.
    garbage = "data:image/png;base64," + "!!!!" * 201
    assert refusal([file_part(url=garbage)], limits).code == "file_too_large"


def test_files_over_the_total_are_refused() -> None:
    limits = FileLimits(max_file_bytes=600, max_total_bytes=1000)
    blob = b"\x89PNG\r\n\x1a\n" + b"\x00" * 492  # 500 bytes
    assert len(parse_files([file_part(blob), file_part(blob)], limits)) == 2
    three = [file_part(blob), file_part(blob), file_part(blob[:-1])]
    assert refusal(three, limits).code == "files_too_large"


def test_the_default_limits_fit_a_cloud_run_request() -> None:
    limits = FileLimits()
    assert (limits.max_files, limits.max_file_bytes, limits.max_total_bytes) == (
        4,
        5 * MIB,
        10 * MIB,
    )
    # A request's files in base64 stay far under Cloud Run's 32 MiB request limit.
    assert limits.max_total_bytes * 4 / 3 < 14 * MIB


def test_five_mebibytes_pass_and_one_byte_more_does_not() -> None:
    big = b"%PDF-" + b"\x00" * (5 * MIB - 5)
    (parsed,) = parse_files([file_part(big, "application/pdf")])
    assert parsed.size == 5 * MIB and parsed.data == big
    assert refusal([file_part(big + b"\x00", "application/pdf")]).code == "file_too_large"


# --- Names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("wall.png", "wall.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Desktop\\wall photo.jpg", "wall photo.jpg"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override
        ("a\x00b\r\nc.txt", "ab c.txt"),
        ('say "hi".txt', "say 'hi'.txt"),
        ("  lots   of\tspace .pdf  ", "lots of space .pdf"),
        ("...hidden", "hidden"),
        ("Cafe\u0301.png", "Café.png"),
        ("\ud800.png", "png"),  # a lone surrogate goes, then the leading dot
        (None, "file-3.png"),
        ("", "file-3.png"),
        ("/", "file-3.png"),
    ],
)
def test_filenames_are_cleaned(raw: Any, expected: str) -> None:
    assert clean_filename(raw, 2, "image/png") == expected


def test_default_names_carry_an_extension_for_their_type() -> None:
    assert clean_filename(None, 0, "image/jpeg") == "file-1.jpg"
    assert clean_filename(None, 0, "application/pdf") == "file-1.pdf"
    assert clean_filename(None, 0, "text/plain") == "file-1.txt"
    assert clean_filename(None, 0, "image/heic") == "file-1.heic"


def test_long_names_are_bounded_and_keep_their_extension() -> None:
    name = clean_filename("w" * 5000 + ".jpeg", 0, "image/jpeg")
    assert len(name) == MAX_FILENAME_CHARS and name.endswith("w.jpeg")
    assert len(clean_filename("x" * 5000, 0, "image/png")) == MAX_FILENAME_CHARS
    (parsed,) = parse_files([file_part(filename="🙂" * 1000 + ".png")])
    assert len(parsed.filename) <= MAX_FILENAME_CHARS and parsed.filename.endswith(".png")


# --- Hypothesis: malformed data URLs ----------------------------------------------------------

SMALL = FileLimits(max_files=4, max_file_bytes=1200, max_total_bytes=2500)
OTHER_TYPES = ["IMAGE/PNG", "text/html", "", "image/", "a/b/c", "image/png;x=1", "image/jpg"]


def mostly(right: Any, wrong: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`right` nine times in ten: most examples are near misses of a valid file."""
    return st.integers(0, 9).flatmap(lambda n: st.just(right) if n else wrong)


@st.composite
def payloads(draw: st.DrawFn, data: bytes) -> str:
    text = base64.b64encode(data).decode()
    mangle = draw(mostly("none", st.sampled_from(["insert", "delete", "replace", "chop", "any"])))
    if mangle == "any":
        return draw(st.text(max_size=80))
    if mangle == "none" or not text:
        return text
    at = draw(st.integers(0, len(text) - 1))
    noise = draw(st.text(min_size=1, max_size=3))
    if mangle == "insert":
        return text[:at] + noise + text[at:]
    if mangle == "delete":
        return text[:at] + text[at + 1 :]
    if mangle == "replace":
        return text[:at] + noise + text[at + 1 :]
    return text[:at]


@st.composite
def hostile_parts(draw: st.DrawFn) -> dict[str, Any]:
    media_type = draw(st.sampled_from(DEFAULT_TYPES))
    tail = st.text("abc \n", max_size=300).map(str.encode) | st.binary(max_size=300)
    data = draw(mostly(SAMPLES[media_type], st.sampled_from([b"", *SAMPLES.values()])))
    data += draw(mostly(b"", tail))
    url_type = draw(mostly(media_type, st.sampled_from(OTHER_TYPES) | st.text(max_size=12)))
    params = draw(
        mostly([], st.lists(st.sampled_from(["charset=utf-8", "x", "", "a=b;c", ","]), max_size=2))
    )
    url = (
        draw(mostly("data:", st.sampled_from(["DATA:", "data", "data:/", "http://x/?", "", " "])))
        + url_type
        + "".join(";" + p for p in params)
        + draw(mostly(";base64", st.sampled_from([";BASE64", "", ";base-64", ";base64;", ";b64"])))
        + draw(mostly(",", st.sampled_from(["", ",,", ";", " ,"])))
        + draw(payloads(data))
    )
    part: dict[str, Any] = {"type": "file", "url": url}
    declared = draw(mostly(media_type, st.sampled_from([*OTHER_TYPES, None, 3, ["image/png"]])))
    if declared is not None:
        part["mediaType"] = declared
    name = draw(mostly("wall.png", st.none() | st.text(max_size=40) | st.integers()))
    if name is not None:
        part["filename"] = name
    return part


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(hostile_parts(), max_size=5))
def test_malformed_data_urls_give_files_or_our_errors(parts: list[dict[str, Any]]) -> None:
    try:
        files = parse_files(parts, SMALL)
    except ChatError as error:
        assert type(error) is CODES.get(error.code), (error.code, type(error))
        return
    assert len(files) == len(parts) <= SMALL.max_files
    assert sum(f.size for f in files) <= SMALL.max_total_bytes
    for n, (parsed, part) in enumerate(zip(files, parts, strict=True)):
        payload = part["url"].split(",", 1)[1]
        assert parsed.index == n
        assert parsed.media_type in SMALL.allowed_types
        assert parsed.data and parsed.data == base64.b64decode(payload, validate=True)
        assert parsed.size == len(parsed.data) <= SMALL.max_file_bytes
        assert parsed.sha256 == hashlib.sha256(parsed.data).hexdigest()
        assert 0 < len(parsed.filename) <= MAX_FILENAME_CHARS and "/" not in parsed.filename


@settings(max_examples=200, deadline=None)
@given(media_type=st.sampled_from(DEFAULT_TYPES), tail=st.binary(max_size=2000))
def test_well_formed_files_arrive_unchanged(media_type: str, tail: bytes) -> None:
    data = SAMPLES[media_type] + (tail if media_type != "text/plain" else tail.hex().encode())
    (parsed,) = parse_files([file_part(data, media_type)])
    assert parsed.data == data and parsed.sha256 == hashlib.sha256(data).hexdigest()


# --- Cloud Storage, on the emulator -----------------------------------------------------------


def test_object_paths() -> None:
    assert object_path("s1", "empathize", "m1", 2, SHA) == (
        f"sessions/s1/steps/empathize/messages/m1/2-{SHA[:16]}"
    )
    with pytest.raises(ValueError):
        object_path("s1", "empathize", "m1", 2, "../../x")
    assert message_prefix("s1", "define", "m1~x") == "sessions/s1/steps/define/messages/m1~x/"
    assert session_prefix("s1") == "sessions/s1/"
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(ValueError):
            object_path("s1", "t", bad, 0, SHA)


@pytest.fixture
def files(storage_client: storage.Client) -> FileStore:
    return FileStore(storage_client, support.FILES_BUCKET)


def stored(client: storage.Client, prefix: str = "") -> dict[str, Any]:
    return {b.name: b for b in client.list_blobs(support.FILES_BUCKET, prefix=prefix)}


def test_put_and_get(files: FileStore, storage_client: storage.Client) -> None:
    path = object_path("s1", "empathize", "m1", 0, SHA)
    assert files.put(path, PNG, "image/png") is True
    assert files.get(path) == (PNG, "image/png")
    blob = stored(storage_client)[path]
    assert blob.metadata == {"sha256": hashlib.sha256(PNG).hexdigest()}
    assert blob.content_type == "image/png" and blob.size == len(PNG)
    assert files.get(object_path("s1", "empathize", "m1", 1, SHA)) is None


def test_a_re_put_of_the_same_bytes_writes_nothing(
    files: FileStore, storage_client: storage.Client
) -> None:
    path = object_path("s1", "empathize", "m1", 0, SHA)
    (parsed,) = parse_files([file_part(PDF, "application/pdf")])
    assert files.put(path, parsed.data, parsed.media_type, parsed.sha256) is True
    first = stored(storage_client)[path]
    time.sleep(0.01)  # the emulator's generations are clock-based
    assert files.put(path, parsed.data, parsed.media_type, parsed.sha256) is False
    assert files.put(path, parsed.data, parsed.media_type) is False  # hash computed: the same
    again = stored(storage_client)[path]
    assert (again.generation, again.updated) == (first.generation, first.updated)
    assert list(stored(storage_client)) == [path]


def test_different_bytes_at_the_same_path_replace_the_object(files: FileStore) -> None:
    path = object_path("s1", "empathize", "m1", 0, SHA)
    files.put(path, PNG, "image/png")
    assert files.put(path, JPEG, "image/jpeg") is True
    assert files.get(path) == (JPEG, "image/jpeg")
    # The same bytes under another type are written again, so the type served is the new one.
    assert files.put(path, JPEG, "application/octet-stream") is True
    assert files.get(path) == (JPEG, "application/octet-stream")


def test_a_reader_can_insist_on_the_bytes_its_document_names(files: FileStore) -> None:
    path = object_path("s1", "empathize", "m1", 0, SHA)
    files.put(path, PNG, "image/png")
    assert files.get(path, sha256=hashlib.sha256(PNG).hexdigest()) == (PNG, "image/png")
    assert files.get(path, sha256=hashlib.sha256(JPEG).hexdigest()) is None


def test_five_mebibytes_round_trip(files: FileStore) -> None:
    data = os.urandom(5 * MIB)
    path = object_path("s1", "ideate", "m9", 3, SHA)
    assert files.put(path, data, "image/webp")
    assert files.get(path) == (data, "image/webp")


def test_delete_prefix_deletes_a_message_and_nothing_beside_it(
    files: FileStore, storage_client: storage.Client
) -> None:
    keep = [
        object_path("s1", "empathize", "m10", 0, SHA),  # m1's prefix must not match m10
        object_path("s1", "define", "m1", 0, SHA),
        object_path("s2", "empathize", "m1", 0, SHA),
    ]
    for path in [object_path("s1", "empathize", "m1", n, SHA) for n in range(3)] + keep:
        files.put(path, TEXT, "text/plain")
    assert files.delete_prefix(message_prefix("s1", "empathize", "m1")) == 3
    assert sorted(stored(storage_client)) == sorted(keep)
    assert files.delete_prefix(message_prefix("s1", "empathize", "m1")) == 0
    assert files.delete_prefix(session_prefix("s1")) == 2
    assert list(stored(storage_client)) == [object_path("s2", "empathize", "m1", 0, SHA)]


@pytest.mark.parametrize("prefix", ["", "/", "sessions/s1", "/sessions/s1/", "//"])
def test_delete_prefix_wants_a_folder(files: FileStore, prefix: str) -> None:
    files.put(object_path("s1", "t", "m", 0, SHA), PNG, "image/png")
    with pytest.raises(ValueError):
        files.delete_prefix(prefix)
    assert files.get(object_path("s1", "t", "m", 0, SHA)) is not None


def test_a_missing_bucket_is_unavailable_and_never_created(storage_client: storage.Client) -> None:
    files = FileStore(storage_client, "no-such-bucket")
    with pytest.raises(StoreUnavailable):
        files.put("sessions/s/steps/t/messages/m/0", PNG, "image/png")
    assert storage_client.lookup_bucket("no-such-bucket") is None


def test_an_unreachable_storage_is_unavailable() -> None:
    client = storage.Client(
        project=support.PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{support.free_port()}"},
    )
    files = FileStore(client, support.FILES_BUCKET, timeout=0.5)  # makes no request
    path = object_path("s1", "t", "m", 0, SHA)
    for call in (
        lambda: files.put(path, PNG, "image/png"),
        lambda: files.get(path),
        lambda: files.delete_prefix("sessions/s1/"),
    ):
        with pytest.raises(StoreUnavailable):
            call()
