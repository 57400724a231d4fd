"""Conversations built by real turns, and the three requests of a turn: through our function,
through the predecessor's route, and straight to the stand-in.

Our function is sent only the new message and the ids of the 64 before it (`seen`), as the
README's transport sends them (it keeps the conversation in Firestore); the predecessor is
sent the whole conversation, as useChat's DefaultChatTransport does for a route
without storage. Each side's history is what that side answered, as its client received it,
so the direct request that follows a turn carries the same `contents` the server sent.

Every user message starts with `turn <id>:`; the stand-in echoes it and records every request,
so a model request (and a summary that quotes the transcript) can be traced to its turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import standin_control
from ..client import FUNCTION_TEXT, STANDIN_TEXT, Stream, chat_body, history_body, request_bytes
from ..client import stream as send
from ..context import STEP

TIMEOUT_S = 30.0
TAG = re.compile(r"turn ([A-Za-z0-9]+-c(\d+)-t(\d+)):")
DIRECT_HEADER = "X-Bench-Direct"  # marks the direct requests in the stand-in's recording
TURN_HEADER = "X-Bench-Turn"  # bench/counting_main.py counts Firestore traffic per turn by it
FILLER = (
    "We interviewed six facilitators about running design sprints remotely; they mention "
    "energy dips after lunch, unclear ownership of sticky notes, and votes that feel rigged."
)


def user_text(turn_id: str, chars: int) -> str:
    """A user message of about `chars` characters that names its turn."""
    head = f"turn {turn_id}: "
    body = (FILLER + " ") * (chars // len(FILLER) + 1)
    return (head + body)[:chars].rstrip()


def turn_of(text: str) -> str | None:
    """The turn id a message (or a transcript's first message) names, if any."""
    match = TAG.search(text)
    return match.group(1) if match else None


@dataclass
class Conversation:
    """One step of one session, held by ours and by the predecessor side by side."""

    index: int
    session: str  # ours, in Firestore
    theirs_session: str  # the predecessor's (it stores nothing; the id is only in the body)
    ours: list[tuple[str, str]] = field(default_factory=list)  # (user text, reply) per turn
    ours_ids: list[str] = field(default_factory=list)  # their message ids, as useChat holds them
    theirs: list[tuple[str, str]] = field(default_factory=list)

    def ui_messages(self, text: str, turn_id: str) -> list[dict[str, Any]]:
        """What useChat sends the predecessor: every message so far, then the new one."""
        out: list[dict[str, Any]] = []
        for i, (user, reply) in enumerate(self.theirs):
            out.append(
                {
                    "id": f"{self.theirs_session}-u{i}",
                    "role": "user",
                    "parts": [{"type": "text", "text": user}],
                }
            )
            out.append(
                {
                    "id": f"{self.theirs_session}-a{i}",
                    "role": "assistant",
                    "parts": [
                        {"type": "step-start"},
                        {"type": "text", "text": reply, "state": "done"},
                    ],
                }
            )
        out.append(
            {"id": f"{turn_id}-u", "role": "user", "parts": [{"type": "text", "text": text}]}
        )
        return out


def gemini_contents(history: list[tuple[str, str]], text: str) -> list[dict[str, Any]]:
    """The `contents` a server sends Gemini for this history plus the new message."""
    contents: list[dict[str, Any]] = []
    for user, reply in history:
        contents.append({"role": "user", "parts": [{"text": user}]})
        contents.append({"role": "model", "parts": [{"text": reply}]})
    contents.append({"role": "user", "parts": [{"text": text}]})
    return contents


class Sides:
    """Sends one turn's requests; each returns the client's view of the stream."""

    def __init__(self, system: str, standin_port: int, theirs_port: int) -> None:
        self.system = system
        self.standin_port = standin_port
        self.theirs_port = theirs_port

    async def ours(self, port: int, conversation: Conversation, turn_id: str, text: str) -> Stream:
        body = chat_body(conversation.session, STEP, f"{turn_id}-u", text)
        body["seen"] = conversation.ours_ids[-64:]  # as the README's transport sends them
        raw = request_bytes("127.0.0.1", port, "/", body, {TURN_HEADER: turn_id})
        return await send("127.0.0.1", port, raw, FUNCTION_TEXT, TIMEOUT_S, collect=True)

    async def theirs(self, conversation: Conversation, turn_id: str, text: str) -> Stream:
        body = history_body(
            conversation.theirs_session, STEP, conversation.ui_messages(text, turn_id)
        )
        raw = request_bytes("127.0.0.1", self.theirs_port, "/", body, {})
        return await send(
            "127.0.0.1", self.theirs_port, raw, FUNCTION_TEXT, TIMEOUT_S, collect=True
        )

    async def direct(self, history: list[tuple[str, str]], text: str, side: str) -> Stream:
        """The request a server would send for this turn, straight to the stand-in."""
        body = standin_control.model_body(self.system, gemini_contents(history, text))
        headers = {"x-goog-api-key": "standin", DIRECT_HEADER: side}
        raw = request_bytes(
            "127.0.0.1", self.standin_port, standin_control.MODEL_PATH, body, headers
        )
        s = await send("127.0.0.1", self.standin_port, raw, STANDIN_TEXT, TIMEOUT_S)
        if s.status != 200 or s.ttfc is None:
            raise RuntimeError(f"stand-in failed: status={s.status} error={s.error} {s.detail}")
        return s
