"""How domain values are written to Firestore documents and read back from them. No I/O.

A message's `parts` are named as the AI SDK names them; times are stored as timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .domain import Ending, FileRef, Message, Source, UserMessage
from .memory import Outcome


def ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def _of_type(parts: Any, kind: str) -> list[dict[str, Any]]:
    """A stored message's parts of one type; anything malformed is no part."""
    if not isinstance(parts, list):
        return []
    return [p for p in parts if isinstance(p, dict) and p.get("type") == kind]


def text(parts: Any) -> str:
    return "".join(p.get("text", "") for p in _of_type(parts, "text"))


def parts(text: str, reasoning: str = "", sources: tuple[Source, ...] = ()) -> list[dict[str, str]]:
    """A message's parts as the AI SDK names them: thoughts, the answer, then its sources."""
    found = [{"type": "reasoning", "text": reasoning}] if reasoning else []
    if text:
        found.append({"type": "text", "text": text})
    for s in sources:
        source = {"type": "source-url", "sourceId": s.source_id, "url": s.url}
        if s.title:
            source["title"] = s.title
        found.append(source)
    return found


def user_parts(user: UserMessage) -> list[dict[str, Any]]:
    """The text, then a reference for each file: type, name, size, object path, hash."""
    found: list[dict[str, Any]] = list(parts(user.text))
    for ref in user.files:
        found.append(
            {
                "type": "file",
                "n": ref.n,
                "mediaType": ref.media_type,
                "filename": ref.filename,
                "size": ref.size,
                "sha256": ref.sha256,
                "path": ref.path,
            }
        )
    return found


def _file_refs(parts: Any) -> tuple[FileRef, ...]:
    return tuple(
        FileRef(
            int(p.get("n", 0)),
            str(p.get("mediaType", "")),
            str(p.get("filename", "")),
            int(p.get("size", 0)),
            str(p.get("sha256", "")),
            str(p.get("path", "")),
        )
        for p in _of_type(parts, "file")
        if p.get("path")
    )


def _sources(parts: Any) -> tuple[Source, ...]:
    return tuple(
        Source(str(p.get("sourceId", "")), str(p.get("url", "")), p.get("title"))
        for p in _of_type(parts, "source-url")
    )


def message(snap: Any, lease_seconds: float) -> Message:
    """A message document as read, with `lapsed` set when its reply's lease ran out."""
    data = snap.to_dict() or {}
    status = data.get("status", "complete")
    lapsed = False
    if status == "streaming" and snap.read_time and snap.update_time:
        # Server times on both sides: no instance's clock decides whether a lease lapsed.
        age = (snap.read_time - snap.update_time).total_seconds()
        lapsed = age > lease_seconds
    return Message(
        id=snap.id,
        role=data.get("role", "user"),
        text=text(data.get("parts")),
        reasoning="".join(p.get("text", "") for p in _of_type(data.get("parts"), "reasoning")),
        sources=_sources(data.get("parts")),
        files=_file_refs(data.get("parts")),
        status=status,
        created_at=seconds(data.get("createdAt")),
        updated_at=seconds(data.get("updatedAt")),
        reply_to=data.get("replyTo"),
        finish_reason=data.get("finishReason"),
        usage=data.get("usage"),
        model=data.get("model"),
        generation=data.get("generation"),
        lapsed=lapsed,
        version=snap.update_time,
    )


def new_reply(
    user_id: str, reply_id: str, created_at: float, generation: str, lease_seconds: float
) -> dict[str, Any]:
    """A claimed reply before its first text: streaming, under a lease."""
    return {
        "id": reply_id,
        "role": "assistant",
        "parts": [],
        "status": "streaming",
        "replyTo": user_id,
        "generation": generation,
        "createdAt": ts(created_at),
        "updatedAt": ts(created_at),
        "lease": ts(created_at + lease_seconds),
        "stopRequested": False,
        "finishReason": None,
        "usage": None,
        "model": None,
    }


def final_fields(ending: Ending) -> dict[str, Any]:
    return {
        "status": ending.status,
        "finishReason": ending.finish_reason,
        "usage": ending.usage,
        "model": ending.model,
    }


def outcomes(session: dict[str, Any]) -> dict[str, Outcome]:
    """The session document's mirror of its steps' outcomes."""
    found = session.get("outcomes")
    if not isinstance(found, dict):
        return {}
    return {
        step: Outcome(step, str(o.get("summary") or ""), seconds(o.get("startedAt")))
        for step, o in found.items()
        if isinstance(o, dict) and o.get("summary")
    }
