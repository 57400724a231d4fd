"""How domain values are written to Firestore documents and read back from them. No I/O.

A message's `parts` are named as the AI SDK names them; times are stored as timestamps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..chat.domain import (
    RECENT,
    UNSETTLED,
    Author,
    Content,
    Ending,
    FileRef,
    Message,
    Outcome,
    Quota,
    Source,
    ToolCall,
    UserMessage,
)
from ..chat.team import WRITERS, Member, Role, role_in


@dataclass(frozen=True)
class StepHead:
    """A step as its session's head document counts it."""

    seq: int = 0  # the last number a write in the step took
    messages: int = 0
    cuts: int = 0  # edits and regenerates that deleted messages
    cut_after: float = 0.0  # the last cut deleted what was created after this
    started_at: float = 0.0
    updated_at: float = 0.0
    # The last numbers taken and the messages that took them: what changed since a copy's
    # number, read by id instead of by query.
    recent: tuple[tuple[int, str], ...] = ()

    def changed_since(self, seq: int) -> list[str] | None:
        """The ids of messages numbered after `seq`; None when `recent` does not reach back
        that far."""
        if seq >= self.seq:
            return []
        if not self.recent or self.recent[0][0] > seq + 1:
            return None
        return [message_id for number, message_id in self.recent if number > seq]

    @property
    def remembered(self) -> tuple[int, list[str]]:
        """The first number `recent` remembers, and the ids of every message numbered since:
        what a look beyond `recent` may still read by id, asking by number only below it."""
        first = self.recent[0][0] if self.recent else self.seq + 1
        return first, [message_id for _, message_id in self.recent]

    def recent_after(self, *taken: tuple[int, str]) -> str:
        """`recent` once these numbers are taken, as stored: one string of "<seq> <id>" pairs
        (ids hold no spaces), which costs a claim a tenth of what a list of maps did."""
        kept = [*self.recent, *taken][-RECENT:]
        return " ".join(f"{number} {message_id}" for number, message_id in kept)


@dataclass(frozen=True)
class Head:
    """The session document as a turn reads it: who owns it, which incarnation of the id it
    is, each step's counters, and the outcomes mirror."""

    exists: bool
    version: Any = None  # its update time: the precondition of the next write to it
    owner: str | None = None
    deleting: bool = False
    incarnation: str = ""
    steps: dict[str, StepHead] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    board_version: int = 0  # moves with every write to the session's board
    members: dict[str, Member] = field(default_factory=dict)  # everyone but the owner
    turns: Quota = field(default_factory=Quota)  # the session's turns this minute
    # Written by a version before heads counted steps: its messages carry no numbers, so its
    # histories are read whole on every look and no copy of them is kept.
    legacy: bool = False

    def role_of(self, uid: str) -> Role | None:
        return role_in(self.owner, self.members.values(), uid) if self.exists else None

    @property
    def writers(self) -> frozenset[str]:
        """Who may send a turn: the owner and the members who are not viewers."""
        if not self.exists:
            return frozenset()
        team = {uid for uid, m in self.members.items() if m.role in WRITERS}
        return frozenset(team | ({self.owner} if self.owner else set()))


def head(snap: Any) -> Head:
    if not snap.exists:
        return Head(False)
    data = snap.to_dict() or {}
    raw = data.get("steps")
    steps = {}
    for step_id, value in (raw if isinstance(raw, dict) else {}).items():
        if isinstance(value, dict):
            steps[step_id] = StepHead(
                int(value.get("seq") or 0),
                int(value.get("messages") or 0),
                int(value.get("cuts") or 0),
                seconds(value.get("cutAfter")),
                seconds(value.get("startedAt")),
                seconds(value.get("updatedAt")),
                _recent(value.get("recent")),
            )
    return Head(
        True,
        snap.update_time,
        data.get("ownerUid"),
        bool(data.get("deleting")),
        str(data.get("incarnation") or ""),
        steps,
        outcomes(data),
        int(data.get("boardVersion") or 0),
        members(data.get("members")),
        session_turns(data.get("turns")),
        legacy=not data.get("incarnation"),
    )


def session_turns(raw: Any) -> Quota:
    if not isinstance(raw, dict):
        return Quota()
    return Quota(float(raw.get("windowStart") or 0.0), int(raw.get("count") or 0))


def turns_fields(q: Quota) -> dict[str, Any]:
    return {"windowStart": q.window_start, "count": q.count}


def members(raw: Any) -> dict[str, Member]:
    found = {}
    for uid, value in (raw if isinstance(raw, dict) else {}).items():
        role = value.get("role") if isinstance(value, dict) else None
        if role in ("member", "viewer"):
            name = str(value.get("name") or "")
            found[uid] = Member(uid, name, role, seconds(value.get("joinedAt")))
    return found


def member_fields(member: Member) -> dict[str, Any]:
    return {"role": member.role, "name": member.name, "joinedAt": ts(member.joined_at)}


def _recent(raw: Any) -> tuple[tuple[int, str], ...]:
    words = raw.split() if isinstance(raw, str) else []
    pairs = zip(words[::2], words[1::2], strict=False)
    return tuple((int(n), i) for n, i in pairs if n.isdigit())


def quota(snap: Any, per_minute: int) -> Quota:
    if not snap.exists:
        return Quota(per_minute=per_minute)
    data = snap.to_dict() or {}
    window, count = float(data.get("windowStart", 0.0)), int(data.get("count", 0))
    return Quota(window, count, snap.update_time, per_minute)


def quota_fields(q: Quota) -> dict[str, Any]:
    # Kept a minute past its window: a TTL policy on expireAt sweeps idle users.
    return {"windowStart": q.window_start, "count": q.count, "expireAt": ts(q.window_start + 120)}


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


def reply_parts(content: Content) -> list[dict[str, Any]]:
    """A reply's parts: thoughts, answer and sources as `parts` stores them, then each tool
    call and each step's start, placed by their text offset (`domain.layout` orders them).
    Inputs and outputs are kept as JSON text: a model's arguments may nest lists in lists,
    which a Firestore value cannot hold."""
    found: list[dict[str, Any]] = list(parts(content.text, content.reasoning, content.sources))
    for call in content.tools:
        part: dict[str, Any] = {
            "type": f"tool-{call.name}",
            "toolCallId": call.call_id,
            "state": call.state,
            "round": call.round,
            "at": call.at,
            "inputJson": json.dumps(call.input, ensure_ascii=False),
        }
        if call.output is not None:
            part["outputJson"] = json.dumps(call.output, ensure_ascii=False)
        if call.error_text is not None:
            part["errorText"] = call.error_text
        if call.signature is not None:
            part["signature"] = call.signature
        for key, value in (
            ("approvalId", call.approval_id),
            ("approved", call.approved),
            ("reason", call.reason),
        ):
            if value is not None:
                part[key] = value
        found.append(part)
    found += [{"type": "step-start", "at": at} for at in content.steps]
    return found


def _tools(raw: Any) -> tuple[ToolCall, ...]:
    calls = []
    for p in raw if isinstance(raw, list) else []:
        kind = p.get("type") if isinstance(p, dict) else None
        if not isinstance(kind, str) or not kind.startswith("tool-"):
            continue
        output = p.get("outputJson")
        calls.append(
            ToolCall(
                str(p.get("toolCallId", "")),
                kind.removeprefix("tool-"),
                json.loads(p.get("inputJson") or "null"),
                int(p.get("round") or 0),
                int(p.get("at") or 0),
                p.get("state", "input-available"),
                json.loads(output) if output is not None else None,
                p.get("errorText"),
                p.get("signature"),
                p.get("approvalId"),
                p.get("approved"),
                p.get("reason"),
            )
        )
    return tuple(calls)


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
    if status in UNSETTLED and snap.read_time and snap.update_time:
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
        tools=_tools(data.get("parts")),
        author=_author(data.get("author")),
        steps=tuple(int(p.get("at") or 0) for p in _of_type(data.get("parts"), "step-start")),
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
        seq=int(data.get("seq") or 0),
    )


def new_user(user: UserMessage, now: float, seq: int) -> dict[str, Any]:
    fields = {
        "id": user.id,
        "role": "user",
        "parts": user_parts(user),
        "status": "complete",
        "seq": seq,
        "createdAt": ts(now),
        "updatedAt": ts(now),
    }
    if user.author is not None:
        fields["author"] = {"uid": user.author.uid, "name": user.author.name}
    return fields


def _author(raw: Any) -> Author | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("uid"), str):
        return None
    return Author(raw["uid"], str(raw.get("name") or ""))


def new_reply(
    user_id: str,
    reply_id: str,
    created_at: float,
    generation: str,
    lease_seconds: float,
    seq: int,
    epoch: str = "",
    status: str = "streaming",
) -> dict[str, Any]:
    """A claimed reply before its first text: streaming (or waiting its turn), under a
    lease."""
    return {
        "id": reply_id,
        "seq": seq,
        "role": "assistant",
        "parts": [],
        "status": status,
        "replyTo": user_id,
        "generation": generation,
        "epoch": epoch or generation,
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
        step: Outcome(
            step,
            str(o.get("summary") or ""),
            seconds(o.get("startedAt")),
            seconds(o.get("updatedAt")),
            int(o.get("through") or 0),
            int(o.get("cuts") or 0),
        )
        for step, o in found.items()
        if isinstance(o, dict) and o.get("summary")
    }
