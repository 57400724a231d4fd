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
    ReasoningDelta,
    Source,
    Started,
    TextDelta,
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
    """One model round between `start-step` and `finish-step`: thoughts go out as a reasoning
    part, closed when the answer starts; the answer as one text part; sources as source-url
    chunks, each once. The end closes what is open, then `finish` and `[DONE]`."""
    text_id = reasoning_id = ""
    text_open = reasoning_open = False
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
                reasoning_id += "+"  # a later reasoning part gets an id of its own
            if not text_open:
                text_open = True
                head += chunks.TextStart(text_id).sse()
            yield head + chunks.TextDelta(text_id, event.text).sse()
        elif isinstance(event, Source):
            yield chunks.SourceUrl(event.source_id, event.url, event.title).sse()
        elif isinstance(event, Started):
            text_id = f"{event.message_id}-text"
            reasoning_id = f"{event.message_id}-reasoning"
            start = chunks.Start(event.message_id, event.metadata or None)
            yield start.sse() + chunks.StartStep().sse()
        elif isinstance(event, KeepAlive):
            yield chunks.PING
        else:
            tail = b""
            if reasoning_open:
                tail += chunks.ReasoningEnd(reasoning_id).sse()
            if text_open:
                tail += chunks.TextEnd(text_id).sse()
            if isinstance(event, Failed):
                tail += chunks.Error(event.error_text).sse()
            finish = chunks.Finish(event.finish_reason, event.metadata or None)
            yield tail + chunks.FinishStep().sse() + finish.sse() + chunks.DONE
            return


def encode_text_stream(events: Iterable[Event]) -> Iterator[bytes]:
    """Plain text: deltas only; a failure after the first byte can only end the body early."""
    for event in events:
        if isinstance(event, TextDelta):
            yield event.text.encode()
        elif isinstance(event, Finished | Failed):
            return
