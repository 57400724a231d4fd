"""Stored histories, written straight into the emulator in the format documents.py defines.

Seeding through the function would take two model calls per message pair and would warm the
instance's history cache as a side effect; writing the documents directly gives a conversation
the instance has never seen, which is exactly the cold-cache case, and the first turn on it
then warms the cache for the turns that follow.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from .services import PROJECT

UID = "local-user"  # what AUTH_MODE=none makes of every caller (auth.LOCAL_UID)
USER_CHARS = 200
REPLY_CHARS = 800


def _text(prefix: str, index: int, chars: int) -> str:
    words = f"{prefix} {index}: " + " ".join(f"word{i % 97}" for i in range(chars // 6 + 1))
    return words[:chars]


def client(emulator_host: str) -> Any:
    import os

    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
    return firestore.Client(project=PROJECT)


def seed_conversation(db: Any, session_id: str, step_id: str, messages: int) -> None:
    """`messages` stored messages (user/assistant pairs, replies complete), newest last."""
    start = datetime.now(UTC) - timedelta(hours=1)
    session = db.collection("sessions").document(session_id)
    step = session.collection("steps").document(step_id)
    batch = db.batch()
    pending = 0
    batch.set(session, {"ownerUid": UID, "createdAt": start, "updatedAt": start})
    batch.set(step, {"createdAt": start, "updatedAt": start, "revision": uuid.uuid4().hex})
    for pair in range(messages // 2):
        at = start + timedelta(seconds=pair * 10)
        user_id = f"seed-{pair:04d}"
        reply_id = f"{user_id}~reply"
        batch.set(
            step.collection("messages").document(user_id),
            {
                "id": user_id,
                "role": "user",
                "parts": [{"type": "text", "text": _text("question", pair, USER_CHARS)}],
                "status": "complete",
                "createdAt": at,
                "updatedAt": at,
            },
        )
        reply_at = at + timedelta(milliseconds=1)
        batch.set(
            step.collection("messages").document(reply_id),
            {
                "id": reply_id,
                "role": "assistant",
                "parts": [{"type": "text", "text": _text("answer", pair, REPLY_CHARS)}],
                "status": "complete",
                "replyTo": user_id,
                "generation": uuid.uuid4().hex,
                "createdAt": reply_at,
                "updatedAt": reply_at + timedelta(seconds=2),
                "finishReason": "stop",
                "usage": {"inputTokens": 10, "outputTokens": 200, "totalTokens": 210},
                "model": "gemini-2.5-flash",
            },
        )
        pending += 2
        if pending >= 400:
            batch.commit()
            batch, pending = db.batch(), 0
    batch.commit()


def gemini_contents(messages: int, user_text: str) -> list[dict[str, Any]]:
    """The `contents` the function sends for a seeded history plus a new user message."""
    contents: list[dict[str, Any]] = []
    for pair in range(messages // 2):
        contents.append({"role": "user", "parts": [{"text": _text("question", pair, USER_CHARS)}]})
        contents.append({"role": "model", "parts": [{"text": _text("answer", pair, REPLY_CHARS)}]})
    contents.append({"role": "user", "parts": [{"text": user_text}]})
    return contents


def ui_messages(messages: int, message_id: str, user_text: str) -> list[dict[str, Any]]:
    """What useChat sends a route without storage: the whole seeded history plus the new message.

    The same texts as `seed_conversation` and `gemini_contents`, shaped as the AI SDK's UI
    messages (an assistant message starts with a `step-start` part; finished text is `done`).
    """
    out: list[dict[str, Any]] = []
    for pair in range(messages // 2):
        user_id = f"seed-{pair:04d}"
        out.append(
            {
                "id": user_id,
                "role": "user",
                "parts": [{"type": "text", "text": _text("question", pair, USER_CHARS)}],
            }
        )
        out.append(
            {
                "id": f"{user_id}~reply",
                "role": "assistant",
                "parts": [
                    {"type": "step-start"},
                    {"type": "text", "text": _text("answer", pair, REPLY_CHARS), "state": "done"},
                ],
            }
        )
    out.append({"id": message_id, "role": "user", "parts": [{"type": "text", "text": user_text}]})
    return out
