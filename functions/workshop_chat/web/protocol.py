"""The wire: what `useChat` sends, and the chunks it reads back.

Parsing turns an untrusted body into a `Turn` or a `BadRequest`; only the new user message is
taken from the client, because everything else in the body can be forged. Encoding knows the
UI message stream v1 and the plain text protocol; it knows nothing of Firestore or Gemini.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..chat.domain import (
    BadRequest,
    Event,
    Failed,
    Finished,
    KeepAlive,
    Message,
    ReasoningDelta,
    Source,
    Started,
    TextDelta,
    Turn,
    UserMessage,
    iso_time,
)
from .file_parts import FILE_PART_ROOM, FileLimits, parse_files

# A conservative id alphabet: every AI SDK id generator (nanoid, uuid, "id-0") fits it, and it
# keeps ids clear of Firestore's reserved forms (`/`, `.`, `..`, `__x__`).
_ID = re.compile(r"[A-Za-z0-9_-]+(?:[.:~][A-Za-z0-9_-]+)*")
_RESERVED = re.compile(r"__.*__")
TRIGGERS = ("submit-message", "regenerate-message")

UI_STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "X-Accel-Buffering": "no",
}
TEXT_STREAM_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def valid_id(value: object, max_chars: int) -> bool:
    """Firestore's document id rules, narrowed to a charset no client needs to escape."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_chars
        and _ID.fullmatch(value) is not None
        and _RESERVED.fullmatch(value) is None
    )


def check_id(value: object, field: str, max_chars: int) -> str:
    if not valid_id(value, max_chars):
        raise BadRequest(
            "invalid_id",
            f"{field} must be 1-{max_chars} characters of A-Z a-z 0-9 _ - (with . : ~ inside)",
        )
    return value  # type: ignore[return-value]


def parse_turn(
    body: Any,
    *,
    max_id_chars: int,
    max_message_chars: int,
    max_parts: int,
    file_limits: FileLimits | None = None,
) -> Turn:
    """Accept the `DefaultChatTransport` body, or the send-last-message form `{id, message}`.

    Only the last message's files are read, and only on a send: earlier messages, and a
    regenerate's, come back from the client with the function's own file URLs.
    """
    if not isinstance(body, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    session_id = check_id(body.get("sessionId"), "sessionId", max_id_chars)
    step_id = check_id(body.get("stepId"), "stepId", max_id_chars)
    trigger = body.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise BadRequest("invalid_trigger", "trigger must be submit-message or regenerate-message")
    target = body.get("messageId")
    if target is not None:
        target = check_id(target, "messageId", max_id_chars)

    message = last_message(body)
    if message is None:
        raise BadRequest("invalid_messages", "messages must be a non-empty array")
    user = parse_user_message(
        message, max_id_chars=max_id_chars, max_chars=max_message_chars, max_parts=max_parts
    )
    if file_limits is not None and trigger == "submit-message":
        user = UserMessage(user.id, user.text, parse_files(message["parts"], file_limits))
    if trigger == "submit-message" and not user.text.strip() and not user.files:
        # A photo of the wall may come alone; a regenerate answers the stored message.
        raise BadRequest("empty_message", "the message has no text and no file")
    return Turn(session_id, step_id, user, trigger, target)


def last_message(body: Any) -> Any:
    """The one message a turn takes from the client: `message` in the send-last-message form,
    else the last of `messages`; None when there is none."""
    if not isinstance(body, dict):
        return None
    if "message" in body and "messages" not in body:
        return body["message"]
    messages = body.get("messages")
    return messages[-1] if isinstance(messages, list) and messages else None


def file_part_bytes(body: Any) -> int:
    """How many bytes of the request its file parts may take: each one's URL and room for its
    other fields. Earlier messages count too (only the last one's files are read): until a
    reload, useChat's default transport sends the data: URLs of files sent before again."""
    if not isinstance(body, dict):
        return 0
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    total = 0
    for message in [*messages, body.get("message")]:
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and part.get("type") == "file":
                url = part.get("url")
                total += (len(url) if isinstance(url, str) else 0) + FILE_PART_ROOM
    return total


def parse_user_message(
    message: Any, *, max_id_chars: int, max_chars: int, max_parts: int
) -> UserMessage:
    """The last message must be the user's; its text, which may be empty (`parse_turn` decides)."""
    if not isinstance(message, dict):
        raise BadRequest("invalid_message", "the last message must be an object")
    if message.get("role") != "user":
        raise BadRequest("invalid_role", "the last message must have role user")
    message_id = check_id(message.get("id"), "message id", max_id_chars)
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise BadRequest("invalid_parts", "the message must have a non-empty parts array")
    if len(parts) > max_parts:
        raise BadRequest("too_many_parts", f"a message may have at most {max_parts} parts")
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequest("invalid_parts", "every part must be an object with a type")
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest("invalid_parts", "a text part needs a string text")
            texts.append(text)
    text = "".join(texts)
    if len(text) > max_chars:
        raise BadRequest("message_too_long", f"a message may have at most {max_chars} characters")
    if "\x00" in text:
        raise BadRequest("invalid_text", "the message text may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape ("\\ud800") that Firestore refuses
        raise BadRequest("invalid_text", "the message text is not valid Unicode") from None
    return UserMessage(message_id, text)


def _sse(chunk: dict[str, Any]) -> bytes:
    body = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + body.encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


def encode_ui_stream(events: Iterable[Event]) -> Iterator[bytes]:
    """UI message stream v1: exactly the documented keys, since strict clients reject others.

    Thoughts go out as a reasoning part, closed when the answer starts; sources as source-url
    chunks, each once.
    """
    part_id = reasoning_id = ""
    text_open = reasoning_open = False
    for event in events:
        if isinstance(event, ReasoningDelta):
            if not reasoning_open:
                reasoning_open = True
                yield _sse({"type": "reasoning-start", "id": reasoning_id})
            yield _sse({"type": "reasoning-delta", "id": reasoning_id, "delta": event.text})
        elif isinstance(event, TextDelta):
            head = b""
            if reasoning_open:
                reasoning_open = False
                head = _sse({"type": "reasoning-end", "id": reasoning_id})
                reasoning_id += "+"  # a later reasoning part gets an id of its own
            if not text_open:
                text_open = True
                head += _sse({"type": "text-start", "id": part_id})
            yield head + _sse({"type": "text-delta", "id": part_id, "delta": event.text})
        elif isinstance(event, Source):
            chunk = {"type": "source-url", "sourceId": event.source_id, "url": event.url}
            if event.title:
                chunk["title"] = event.title
            yield _sse(chunk)
        elif isinstance(event, Started):
            part_id = f"{event.message_id}-text"
            reasoning_id = f"{event.message_id}-reasoning"
            start: dict[str, Any] = {"type": "start", "messageId": event.message_id}
            if event.metadata:
                start["messageMetadata"] = event.metadata
            yield _sse(start) + _sse({"type": "start-step"})
        elif isinstance(event, KeepAlive):
            yield PING
        else:
            tail = b""
            if reasoning_open:
                tail += _sse({"type": "reasoning-end", "id": reasoning_id})
            if text_open:
                tail += _sse({"type": "text-end", "id": part_id})
            if isinstance(event, Failed):
                tail += _sse({"type": "error", "errorText": event.error_text})
            finish: dict[str, Any] = {"type": "finish", "finishReason": event.finish_reason}
            if event.metadata:
                finish["messageMetadata"] = event.metadata
            yield tail + _sse({"type": "finish-step"}) + _sse(finish) + DONE
            return


def encode_text_stream(events: Iterable[Event]) -> Iterator[bytes]:
    """Plain text: deltas only; a failure after the first byte can only end the body early."""
    for event in events:
        if isinstance(event, TextDelta):
            yield event.text.encode()
        elif isinstance(event, Finished | Failed):
            return


def ui_message(
    message: Message, file_url: Callable[[str, int], str] | None = None
) -> dict[str, Any]:
    """A stored message as the UIMessage `useChat` takes as its initial messages."""
    metadata: dict[str, Any] = {"createdAt": iso_time(message.created_at), "status": message.status}
    if message.role == "assistant":
        for key, value in (
            ("finishReason", message.finish_reason),
            ("usage", message.usage),
            ("model", message.model),
        ):
            if value is not None:
                metadata[key] = value
    parts: list[dict[str, Any]] = []
    if message.reasoning:
        parts.append({"type": "reasoning", "text": message.reasoning})
    if message.text:
        parts.append({"type": "text", "text": message.text})
    for ref in message.files if file_url else ():
        url = file_url(message.id, ref.n)  # type: ignore[misc]
        parts.append(
            {"type": "file", "mediaType": ref.media_type, "filename": ref.filename, "url": url}
        )
    for source in message.sources:
        part = {"type": "source-url", "sourceId": source.source_id, "url": source.url}
        if source.title:
            part["title"] = source.title
        parts.append(part)
    return {"id": message.id, "role": message.role, "parts": parts, "metadata": metadata}


def overview(session_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """`GET /sessions/<id>`: the steps in workshop order, with what each found so far."""
    return {
        "sessionId": session_id,
        "steps": [
            {
                "stepId": s["stepId"],
                "summary": s["summary"],
                "summaryUpdatedAt": s["summaryUpdatedAt"] and iso_time(s["summaryUpdatedAt"]),
                "messageCount": s["messageCount"],
                "updatedAt": iso_time(s["updatedAt"]),
            }
            for s in steps
        ],
    }


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
