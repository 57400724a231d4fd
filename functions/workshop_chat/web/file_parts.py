"""The AI SDK's file parts of a new user message, decoded and checked; no I/O.

A file arrives inline as a `data:` URL (`sendMessage({ text, files })` reads it in the browser).
Nothing else is accepted and no URL is ever fetched. Every refusal is a domain error with a code
of its own, raised before anything is written. The bytes go to Cloud Storage through
`chat/attachments.py`.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import unicodedata
from typing import Any

from ..chat.attachments import FileLimits
from ..chat.domain import NewFile
from ..chat.errors import InvalidRequest, TooLarge, UnsupportedMedia

MAX_FILENAME_CHARS = 120
_EXTENSIONS = {"image/jpeg": ".jpg", "application/pdf": ".pdf", "text/plain": ".txt"}
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_MAX_HEADER = 256  # "data:<type>;<params>;base64" is short; a longer head is not a file
DEFAULT_LIMITS = FileLimits()


def parse_files(parts: list[Any], limits: FileLimits = DEFAULT_LIMITS) -> tuple[NewFile, ...]:
    """The message's `file` parts, decoded and checked; other part types are not looked at.

    Sizes are known from the base64 length, so an oversized file is refused before decoding.
    """
    raw = [p for p in parts if isinstance(p, dict) and p.get("type") == "file"]
    if len(raw) > limits.max_files:
        raise InvalidRequest(
            "too_many_files", f"a message may carry at most {limits.max_files} files"
        )
    files: list[NewFile] = []
    total = 0
    for index, part in enumerate(raw):
        media_type, payload = _data_url(part, limits)
        padding = len(payload[-2:]) - len(payload[-2:].rstrip("="))
        size = len(payload) // 4 * 3 - padding
        if size > limits.max_file_bytes:
            raise TooLarge("file_too_large", f"a file may be at most {limits.max_file_bytes} bytes")
        total += size
        if total > limits.max_total_bytes:
            raise TooLarge(
                "files_too_large",
                f"a message's files may be at most {limits.max_total_bytes} bytes together",
            )
        try:
            data = binascii.a2b_base64(payload, strict_mode=True)
        except binascii.Error:
            raise InvalidRequest("invalid_base64", "the file's data is not valid base64") from None
        if not data:
            raise InvalidRequest("empty_file", "a file may not be empty")
        if not _looks_like(media_type, data):
            raise InvalidRequest("file_content_mismatch", f"the file's bytes are not {media_type}")
        name = clean_filename(part.get("filename"), index, media_type)
        digest = hashlib.sha256(data).hexdigest()
        files.append(NewFile(index, media_type, name, data, digest, len(data)))
    return tuple(files)


def _data_url(part: dict[str, Any], limits: FileLimits) -> tuple[str, str]:
    """(media type, base64 payload) of a file part, or the refusal that fits."""
    media_type, url, filename = part.get("mediaType"), part.get("url"), part.get("filename")
    if not isinstance(media_type, str) or not isinstance(url, str):
        raise InvalidRequest("invalid_file", "a file part needs a string mediaType and url")
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequest("invalid_file", "a file part's filename must be a string")
    if url[:5].lower() != "data:":
        raise InvalidRequest(
            "unsupported_file_url", "a file must be sent inline as a data: URL; no URL is fetched"
        )
    head, comma, _ = url[: _MAX_HEADER + 1].partition(",")
    meta = head[5:].split(";")
    if not comma or meta[-1].strip().lower() != "base64" or len(meta) < 2:
        raise InvalidRequest("invalid_data_url", "a file's URL must be data:<type>;base64,<data>")
    declared = _essence(media_type)
    if _essence(meta[0] or "text/plain") != declared:
        raise InvalidRequest(
            "file_type_mismatch", "the file's mediaType differs from its data URL's"
        )
    if declared not in limits.allowed_types:
        raise UnsupportedMedia(
            "unsupported_file_type",
            f"{declared or 'this type'} is not accepted; "
            f"allowed: {', '.join(limits.allowed_types)}",
        )
    payload = url[len(head) + 1 :]
    if not payload.isascii() or len(payload) % 4:
        raise InvalidRequest("invalid_base64", "the file's data is not valid base64")
    return declared, payload


def _essence(media_type: str) -> str:
    """`Image/PNG; charset=x` -> `image/png`; an unparseable type -> ``."""
    value = media_type.split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else ""


def _looks_like(media_type: str, data: bytes) -> bool:
    """A light check of the first bytes, so that Gemini and the browser get what was declared."""
    if media_type == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if media_type == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    if media_type == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if media_type in ("image/heic", "image/heif"):
        return data[4:8] == b"ftyp"
    if media_type == "application/pdf":
        return b"%PDF-" in data[:1024]
    if media_type == "text/plain":
        try:
            return "\x00" not in data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True  # a type added by configuration: its bytes are taken as they are


def clean_filename(raw: object, index: int, media_type: str) -> str:
    """A display name that is safe to store and to put in a header: no path, no control or
    format characters (bidi overrides), no quotes, at most MAX_FILENAME_CHARS characters."""
    name = raw if isinstance(raw, str) else ""
    name = re.split(r"[/\\]", name)[-1]
    if len(name) > 1024:  # keep the work bounded, and the extension
        name = name[:512] + name[-32:]
    kept = []
    for ch in name:
        kind = unicodedata.category(ch)
        if kind[0] == "Z" or ch.isspace():
            kept.append(" ")
        elif kind[0] != "C":
            kept.append("'" if ch == '"' else ch)
    name = " ".join(unicodedata.normalize("NFC", "".join(kept)).split()).strip(". ")
    if not name:
        subtype = media_type.partition("/")[2]
        name = f"file-{index + 1}{_EXTENSIONS.get(media_type, '.' + subtype)}"
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 10:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name
