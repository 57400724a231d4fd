"""The wire: what `useChat` sends, and the chunks it reads back.

Parsing turns an untrusted body into a `Turn` or a `InvalidRequest`; only the new user message is
taken from the client, because everything else in the body can be forged. Encoding knows the
UI message stream v1 and the plain text protocol; it knows nothing of Firestore or Gemini.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from ..chat.attachments import FILE_PART_ROOM, FileLimits
from ..chat.board import BoardItem
from ..chat.budget import Spend, seconds_to_next_day
from ..chat.domain import (
    RECENT,
    Answer,
    Approval,
    Message,
    NewFile,
    NextStep,
    TextDelta,
    ToolCall,
    ToolDone,
    ToolStarted,
    Trigger,
    Turn,
    UserMessage,
    iso_time,
    layout,
    reply_id_for,
)
from ..chat.errors import InvalidRequest
from ..chat.ports import SessionView, StepSummary
from .file_parts import parse_files

# A conservative id alphabet: every AI SDK id generator (nanoid, uuid, "id-0") fits it, and it
# keeps ids clear of Firestore's reserved forms (`/`, `.`, `..`, `__x__`).
_ID = re.compile(r"[A-Za-z0-9_-]+(?:[.:~][A-Za-z0-9_-]+)*")
_RESERVED = re.compile(r"__.*__")


def valid_id(value: object, max_chars: int) -> TypeGuard[str]:
    """Firestore's document id rules, narrowed to a charset no client needs to escape."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_chars
        and _ID.fullmatch(value) is not None
        and _RESERVED.fullmatch(value) is None
    )


def check_id(value: object, field: str, max_chars: int) -> str:
    if not valid_id(value, max_chars):
        raise InvalidRequest(
            "invalid_id",
            f"{field} must be 1-{max_chars} characters of A-Z a-z 0-9 _ - (with . : ~ inside)",
        )
    return value


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
        raise InvalidRequest("invalid_body", "the body must be a JSON object")
    session_id = check_id(body.get("sessionId"), "sessionId", max_id_chars)
    step_id = check_id(body.get("stepId"), "stepId", max_id_chars)
    trigger: Trigger
    raw_trigger = body.get("trigger", "submit-message")
    if raw_trigger == "submit-message":
        trigger = "submit-message"
    elif raw_trigger == "regenerate-message":
        trigger = "regenerate-message"
    else:
        raise InvalidRequest(
            "invalid_trigger", "trigger must be submit-message or regenerate-message"
        )
    target = body.get("messageId")
    if target is not None:
        target = check_id(target, "messageId", max_id_chars)

    message = last_message(body)
    if message is None:
        raise InvalidRequest("invalid_messages", "messages must be a non-empty array")
    seen = parse_seen(body, max_id_chars)
    if (
        isinstance(message, dict)
        and message.get("role") == "assistant"
        and trigger == "submit-message"
    ):
        approval = parse_approval(message, max_id_chars)
        user = UserMessage(approval.reply_id, "")
        return Turn(session_id, step_id, user, approval=approval, seen=seen)
    user = parse_user_message(
        message, max_id_chars=max_id_chars, max_chars=max_message_chars, max_parts=max_parts
    )
    files: tuple[NewFile, ...] = ()
    if file_limits is not None and trigger == "submit-message":
        files = parse_files(message["parts"], file_limits)
    if trigger == "submit-message" and not user.text.strip() and not files:
        # A photo of the wall may come alone; a regenerate answers the stored message.
        raise InvalidRequest("empty_message", "the message has no text and no file")
    return Turn(session_id, step_id, user, trigger, target, files, seen=seen)


SEEN_MAX = RECENT  # ids a request may list as seen: as many as a head remembers


def parse_seen(body: dict[str, Any], max_id_chars: int) -> tuple[str, ...]:
    """The ids of the messages the client holds before the one it sends, newest last: `seen`
    in the send-last-message form, else those of the earlier `messages`. Only a hint of what
    to read beside the session (what it reads is the store's), so a malformed earlier message
    is passed over; a malformed `seen` is refused, since a client wrote it on purpose."""
    if "seen" in body:
        seen = body["seen"]
        if not isinstance(seen, list) or len(seen) > SEEN_MAX:
            raise InvalidRequest("invalid_seen", f"seen must be an array of at most {SEEN_MAX} ids")
        return tuple(check_id(i, "seen id", max_id_chars) for i in seen)
    listed = body.get("messages")
    earlier = listed[-SEEN_MAX - 1 : -1] if isinstance(listed, list) else []
    ids = (m.get("id") for m in earlier if isinstance(m, dict))
    return tuple(i for i in ids if valid_id(i, max_id_chars))


MAX_REASON_CHARS = 1000


def parse_approval(message: dict[str, Any], max_id_chars: int) -> Approval:
    """What `lastAssistantMessageIsCompleteWithApprovalResponses` sends: the assistant message
    whose tool parts the team answered (`approval-responded`, with the approval's id and
    answer). Only those parts are read; the rest of the message is the function's own."""
    reply_id = check_id(message.get("id"), "message id", max_id_chars)
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise InvalidRequest("invalid_parts", "the message must have a parts array")
    answers = []
    for part in parts:
        if not isinstance(part, dict) or part.get("state") != "approval-responded":
            continue
        approval = part.get("approval")
        if not isinstance(approval, dict) or not isinstance(approval.get("approved"), bool):
            raise InvalidRequest("invalid_approval", "an answered approval needs approval.approved")
        reason = approval.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
            raise InvalidRequest(
                "invalid_approval", f"approval.reason is a string of at most {MAX_REASON_CHARS}"
            )
        approval_id = check_id(approval.get("id"), "approval id", max_id_chars)
        answers.append(Answer(approval_id, approval["approved"], reason))
    if not answers:
        raise InvalidRequest(
            "invalid_role", "the last message must have role user, or answer an approval"
        )
    return Approval(reply_id, tuple(answers))


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
    listed = body.get("messages")
    messages: list[Any] = listed if isinstance(listed, list) else []
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
        raise InvalidRequest("invalid_message", "the last message must be an object")
    if message.get("role") != "user":
        raise InvalidRequest("invalid_role", "the last message must have role user")
    # Its reply's id, `<id>~reply`, must be a valid id too: clients name it in requests.
    room = max_id_chars - len(reply_id_for(""))
    message_id = check_id(message.get("id"), "message id", room)
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise InvalidRequest("invalid_parts", "the message must have a non-empty parts array")
    if len(parts) > max_parts:
        raise InvalidRequest("too_many_parts", f"a message may have at most {max_parts} parts")
    texts: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest("invalid_parts", "every part must be an object with a type")
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest("invalid_parts", "a text part needs a string text")
            texts.append(text)
    text = "".join(texts)
    if len(text) > max_chars:
        raise InvalidRequest(
            "message_too_long", f"a message may have at most {max_chars} characters"
        )
    if "\x00" in text:
        raise InvalidRequest("invalid_text", "the message text may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape ("\\ud800") that Firestore refuses
        raise InvalidRequest("invalid_text", "the message text is not valid Unicode") from None
    return UserMessage(message_id, text)


def ui_message(
    message: Message, file_url: Callable[[str, int], str] | None = None
) -> dict[str, Any]:
    """A stored message as the UIMessage `useChat` takes as its initial messages."""
    metadata: dict[str, Any] = {"createdAt": iso_time(message.created_at), "status": message.status}
    if message.author is not None:
        metadata["author"] = {"uid": message.author.uid, "name": message.author.name}
    if message.role == "assistant":
        for key, value in (
            ("finishReason", message.finish_reason),
            ("usage", message.usage),
            ("model", message.model),
        ):
            if value is not None:
                metadata[key] = value
    parts: list[dict[str, Any]] = []
    if message.tools:  # as useChat builds it from the stream: a part for each step's start
        parts.append({"type": "step-start"})
    if message.reasoning:
        parts.append({"type": "reasoning", "text": message.reasoning})
    for event in layout(message.text, message.tools, message.steps):
        if isinstance(event, TextDelta):
            parts.append({"type": "text", "text": event.text})
        elif isinstance(event, ToolStarted):
            parts.append(tool_part(event.call))
        elif isinstance(event, ToolDone):
            parts[-1] = tool_part(event.call)  # its input part, just before
        elif isinstance(event, NextStep):
            parts.append({"type": "step-start"})
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


def tool_part(call: ToolCall) -> dict[str, Any]:
    """A tool call as a UIMessage part (`tool-<name>`), in the state it reached."""
    part: dict[str, Any] = {
        "type": f"tool-{call.name}",
        "toolCallId": call.call_id,
        "state": call.state,
        "input": call.input,
    }
    if call.state == "output-available":
        part["output"] = call.output
    elif call.state == "output-error":
        part["errorText"] = call.error_text or "the tool failed"
    if call.approval_id is not None:
        approval: dict[str, Any] = {"id": call.approval_id}
        if call.approved is not None:
            approval["approved"] = call.approved
        if call.reason is not None:
            approval["reason"] = call.reason
        part["approval"] = approval
    return part


def board_item(item: BoardItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "title": item.title,
        "detail": item.detail,
        "stepId": item.step_id,
        "createdBy": item.created_by,
        "sourceMessageId": item.source_message_id,
        "createdAt": iso_time(item.created_at),
        "updatedAt": iso_time(item.updated_at),
        "version": item.version,
    }


def overview(
    session_id: str, session: SessionView, steps: list[StepSummary], uid: str
) -> dict[str, Any]:
    """`GET /sessions/<id>`: the caller's role, the team, and the steps in workshop order with
    what each found so far."""
    team = [{"uid": session.owner, "name": "", "role": "owner"}] if session.owner else []
    joined = sorted(session.members, key=lambda m: (m.joined_at, m.uid))
    team += [{"uid": m.uid, "name": m.name, "role": m.role} for m in joined]
    return {
        "sessionId": session_id,
        "role": session.role_of(uid),
        "members": team,
        "steps": [
            {
                "stepId": s.step_id,
                "summary": s.summary,
                "summaryUpdatedAt": iso_time(s.summary_updated_at)
                if s.summary_updated_at
                else None,
                "messageCount": s.message_count,
                "updatedAt": iso_time(s.updated_at),
            }
            for s in steps
        ],
    }


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def usage(spend: Spend, now: float) -> dict[str, Any]:
    """`GET /usage`: the caller's own tokens today and their limit (null: none); of the
    project, only whether it may still spend."""
    limit = spend.user_limit or None
    return {
        "day": spend.day,
        "usedTokens": spend.user,
        "limitTokens": limit,
        "remainingTokens": max(0, spend.user_limit - spend.user) if limit else None,
        "resetsInSeconds": seconds_to_next_day(now),
        "projectBudgetExhausted": bool(
            spend.project_limit and spend.project >= spend.project_limit
        ),
    }


PAGE_MAX = 200  # messages a history page holds, at most and by default


def page_of(args: Mapping[str, str], max_id_chars: int) -> tuple[int, str | None]:
    """`?limit=&before=`: how many of the newest messages, and before which message id."""
    raw = args.get("limit", "")
    if raw and not (raw.isdigit() and 1 <= int(raw) <= PAGE_MAX):
        raise InvalidRequest("invalid_limit", f"limit must be a whole number from 1 to {PAGE_MAX}")
    before = args.get("before") or None
    if before is not None:
        check_id(before, "before", max_id_chars)
    return (int(raw) if raw else PAGE_MAX), before
