"""A minimal HTTP/1.1 streaming client on asyncio protocols: cheap enough for a thousand streams.

Each response is read as it arrives and timestamped in `data_received` with `time.monotonic()`
(CLOCK_MONOTONIC, shared by every process on the machine). Only what the benchmark needs is
parsed: the status line and the SSE `data:` lines that carry text. Requests send
`Connection: close`, so the end of a response is the end of the connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

# What marks a text chunk, per server.
FUNCTION_TEXT = b'"type":"text-delta"'
STANDIN_TEXT = b'"text":'
ERROR_EVENT = b'"type":"error"'
START_EVENT = b'"type":"start"'
DONE_LINE = b"data: [DONE]"


@dataclass
class Stream:
    """One response as the client saw it; times are time.monotonic() seconds."""

    sent: float = 0.0
    first_byte: float | None = None
    status: int | None = None
    texts: list[float] = field(default_factory=list)  # arrival of each text chunk
    text_reads: int = 0  # reads that carried at least one text chunk (coalescing shows here)
    done: bool = False
    error_event: bool = False
    error: str | None = None
    ended: float | None = None
    bytes: int = 0
    keep_times: bool = True
    text_count: int = 0
    first_text: float | None = None
    detail: str = ""  # the body of a refusal, or the error event, for the report
    collect: bool = False  # keep the text itself: a conversation's next turn needs the reply
    deltas: list[str] = field(default_factory=list)
    message_id: str | None = None  # the reply's, from its `start` chunk (with `collect`)

    @property
    def reply(self) -> str:
        """The reply as the client saw it (with `collect`), e.g. for the history useChat sends."""
        return "".join(self.deltas)

    @property
    def ttfc(self) -> float | None:
        return None if self.first_text is None else self.first_text - self.sent

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and not self.error_event


class _Protocol(asyncio.Protocol):
    def __init__(self, stream: Stream, marker: bytes, finished: asyncio.Future[None]) -> None:
        self.stream = stream
        self.marker = marker
        self.finished = finished
        self.pending = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        s = self.stream
        if s.first_byte is None:
            s.first_byte = now
        s.bytes += len(data)
        buf = self.pending + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self.pending = buf
            return
        lines, self.pending = buf[: cut + 1], buf[cut + 1 :]
        if s.status is None:
            head = lines.split(b"\r\n", 1)[0].split()
            s.status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
        if s.status != 200 and len(s.detail) < 300:
            s.detail += lines.rsplit(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:300]
        texts = 0
        for line in lines.split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            if self.marker in line:
                texts += 1
                if s.collect:
                    s.deltas.append(_delta(line))
            elif line.startswith(DONE_LINE):
                s.done = True
            elif s.collect and START_EVENT in line:
                s.message_id = _event(line).get("messageId")
            elif ERROR_EVENT in line:
                s.error_event = True
                s.detail = line.decode(errors="replace")[:300]
        if texts:
            s.text_reads += 1
            s.text_count += texts
            if s.first_text is None:
                s.first_text = now
            if s.keep_times:
                s.texts.extend([now] * texts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.ended = time.monotonic()
        if self.stream.status not in (None, 200) and len(self.stream.detail) < 300:
            self.stream.detail += self.pending.decode(errors="replace")[:300]
        if exc is not None and self.stream.error is None:
            self.stream.error = type(exc).__name__
        if not self.finished.done():
            self.finished.set_result(None)


def _event(line: bytes) -> dict[str, Any]:
    """One UI message stream event ({} if it does not parse)."""
    try:
        event = json.loads(line[len(b"data: ") :])
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _delta(line: bytes) -> str:
    """The text of one `text-delta` event ("" if it does not parse)."""
    delta = _event(line).get("delta")
    return delta if isinstance(delta, str) else ""


def request_bytes(host: str, port: int, path: str, body: Any, headers: dict[str, str]) -> bytes:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def stream(
    host: str,
    port: int,
    raw_request: bytes,
    marker: bytes,
    timeout: float,
    keep_times: bool = True,
    collect: bool = False,
) -> Stream:
    """Send one request and read the whole response; never raises, never outlives `timeout`."""
    loop = asyncio.get_running_loop()
    s = Stream(keep_times=keep_times, collect=collect)
    finished: asyncio.Future[None] = loop.create_future()
    s.sent = time.monotonic()
    transport = None
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(s, marker, finished), host, port), timeout
        )
        transport.write(raw_request)
        left = timeout - (time.monotonic() - s.sent)
        await asyncio.wait_for(finished, max(0.001, left))
    except TimeoutError:
        s.error = "timeout"
    except OSError as exc:
        s.error = type(exc).__name__
    finally:
        if transport is not None:
            transport.close()
    if s.ended is None:
        s.ended = time.monotonic()
    return s


def chat_body(session_id: str, step_id: str, message_id: str, text: str) -> dict[str, Any]:
    """What useChat's DefaultChatTransport sends for a new user message (last message only)."""
    message = {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}
    return history_body(session_id, step_id, [message])


def history_body(session_id: str, step_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The same body with every message of the conversation, as a route without storage gets it."""
    return {
        "id": session_id,
        "sessionId": session_id,
        "stepId": step_id,
        "trigger": "submit-message",
        "messages": messages,
    }
