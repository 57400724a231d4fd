"""The wire, outbound: a reply's events as the AI SDK's UI message stream v1 (`chunks.py`), or
as the plain text protocol. It knows nothing of Firestore or Gemini.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..chat.domain import (
    Event,
    Failed,
    Finished,
    KeepAlive,
    NextStep,
    ReasoningDelta,
    Source,
    Started,
    TextDelta,
    ToolCall,
    ToolDone,
    ToolStarted,
    Waiting,
)
from . import chunks

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


def encode_ui_stream(events: Iterable[Event]) -> Iterator[bytes]:
    """Each model round between `start-step` and `finish-step`: thoughts go out as a reasoning
    part, closed when the answer starts; the answer as text parts, a new one after each tool
    call; each call as its input, then its output or error; sources as source-url chunks,
    each once. The end closes what is open, then `finish` and `[DONE]`."""
    text_id = reasoning_id = ""
    text_open = reasoning_open = in_step = False

    def close() -> bytes:
        nonlocal text_open, reasoning_open, text_id, reasoning_id
        out = b""
        if reasoning_open:
            reasoning_open = False
            out += chunks.ReasoningEnd(reasoning_id).sse()
            reasoning_id += "+"  # a later reasoning part gets an id of its own
        if text_open:
            text_open = False
            out += chunks.TextEnd(text_id).sse()
            text_id += "+"
        return out

    for event in events:
        if isinstance(event, ReasoningDelta):
            if not reasoning_open:
                reasoning_open = True
                yield chunks.ReasoningStart(reasoning_id).sse()
            yield chunks.ReasoningDelta(reasoning_id, event.text).sse()
        elif isinstance(event, TextDelta):
            head = b""
            if reasoning_open:
                reasoning_open = False
                head = chunks.ReasoningEnd(reasoning_id).sse()
                reasoning_id += "+"
            if not text_open:
                text_open = True
                head += chunks.TextStart(text_id).sse()
            yield head + chunks.TextDelta(text_id, event.text).sse()
        elif isinstance(event, Source):
            yield chunks.SourceUrl(event.source_id, event.url, event.title).sse()
        elif isinstance(event, ToolStarted):
            call = event.call
            yield (
                close()
                + chunks.ToolInputStart(call.call_id, call.name).sse()
                + chunks.ToolInputAvailable(call.call_id, call.name, call.input).sse()
            )
        elif isinstance(event, ToolDone):
            yield _tool_result(event.call)
        elif isinstance(event, NextStep):
            head = close() + (chunks.FinishStep().sse() if in_step else b"")
            in_step = True
            yield head + chunks.StartStep().sse()
        elif isinstance(event, Started):
            text_id = f"{event.message_id}-text"
            reasoning_id = f"{event.message_id}-reasoning"
            start = chunks.Start(event.message_id, event.metadata or None)
            if event.continued:  # the approved call's result first, then the next step
                text_id += "+"
                yield start.sse()
            else:
                in_step = True
                yield start.sse() + chunks.StartStep().sse()
        elif isinstance(event, KeepAlive):
            yield chunks.PING
        elif isinstance(event, Waiting):
            yield chunks.DataWaiting(event.message_id, event.ahead).sse()
        else:
            tail = close()
            if isinstance(event, Failed):
                tail += chunks.Error(event.error_text).sse()
            finish = chunks.Finish(event.finish_reason, event.metadata or None)
            yield (
                tail + (chunks.FinishStep().sse() if in_step else b"") + finish.sse() + chunks.DONE
            )
            return


def _tool_result(call: ToolCall) -> bytes:
    if call.state == "output-available":
        return chunks.ToolOutputAvailable(call.call_id, call.output).sse()
    if call.state == "approval-requested" and call.approval_id:
        return chunks.ToolApprovalRequest(call.approval_id, call.call_id).sse()
    if call.state == "output-denied":
        return chunks.ToolOutputDenied(call.call_id).sse()
    return chunks.ToolOutputError(call.call_id, call.error_text or "the tool failed").sse()


def encode_text_stream(events: Iterable[Event]) -> Iterator[bytes]:
    """Plain text: deltas only; a failure after the first byte can only end the body early."""
    for event in events:
        if isinstance(event, TextDelta):
            yield event.text.encode()
        elif isinstance(event, Finished | Failed):
            return
