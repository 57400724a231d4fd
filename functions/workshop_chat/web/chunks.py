"""The chunks of the AI SDK's UI message stream, one class each, as `ai` 7.x defines them
(`packages/ai/src/ui-message-stream/ui-message-chunks.ts`) and as strict `ai` 5.0 reads them.

Each class serializes to exactly the keys the protocol documents, in the protocol's names:
clients 5.0.0-5.0.216 and 6.0.0-6.0.230 reject a chunk with any other key, so nothing optional
is sent empty and nothing extra is ever added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar


class Chunk:
    """One `data:` event of the stream."""

    type: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The chunk's own keys, in the protocol's names; None values are left out."""
        return {}

    def sse(self) -> bytes:
        body = {"type": self.type, **{k: v for k, v in self.fields().items() if v is not None}}
        return (
            b"data: "
            + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            + b"\n\n"
        )


@dataclass(frozen=True)
class Start(Chunk):
    type: ClassVar[str] = "start"
    message_id: str
    message_metadata: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        return {"messageId": self.message_id, "messageMetadata": self.message_metadata}


@dataclass(frozen=True)
class StartStep(Chunk):
    type: ClassVar[str] = "start-step"


@dataclass(frozen=True)
class FinishStep(Chunk):
    type: ClassVar[str] = "finish-step"


@dataclass(frozen=True)
class TextStart(Chunk):
    type: ClassVar[str] = "text-start"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True)
class TextDelta(Chunk):
    type: ClassVar[str] = "text-delta"
    id: str
    delta: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "delta": self.delta}


@dataclass(frozen=True)
class TextEnd(Chunk):
    type: ClassVar[str] = "text-end"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True)
class ReasoningStart(Chunk):
    type: ClassVar[str] = "reasoning-start"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True)
class ReasoningDelta(Chunk):
    type: ClassVar[str] = "reasoning-delta"
    id: str
    delta: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "delta": self.delta}


@dataclass(frozen=True)
class ReasoningEnd(Chunk):
    type: ClassVar[str] = "reasoning-end"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True)
class SourceUrl(Chunk):
    type: ClassVar[str] = "source-url"
    source_id: str
    url: str
    title: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"sourceId": self.source_id, "url": self.url, "title": self.title or None}


@dataclass(frozen=True)
class ToolInputStart(Chunk):
    type: ClassVar[str] = "tool-input-start"
    tool_call_id: str
    tool_name: str

    def fields(self) -> dict[str, Any]:
        return {"toolCallId": self.tool_call_id, "toolName": self.tool_name}


@dataclass(frozen=True)
class ToolInputAvailable(Chunk):
    type: ClassVar[str] = "tool-input-available"
    tool_call_id: str
    tool_name: str
    input: Any

    def fields(self) -> dict[str, Any]:
        return {"toolCallId": self.tool_call_id, "toolName": self.tool_name, "input": self.input}


@dataclass(frozen=True)
class ToolOutputAvailable(Chunk):
    type: ClassVar[str] = "tool-output-available"
    tool_call_id: str
    output: Any

    def fields(self) -> dict[str, Any]:
        return {"toolCallId": self.tool_call_id, "output": self.output}


@dataclass(frozen=True)
class ToolOutputError(Chunk):
    type: ClassVar[str] = "tool-output-error"
    tool_call_id: str
    error_text: str

    def fields(self) -> dict[str, Any]:
        return {"toolCallId": self.tool_call_id, "errorText": self.error_text}


@dataclass(frozen=True)
class ToolApprovalRequest(Chunk):
    """Not in `ai` 5.0: a strict 5.0 client cannot take a reply that asks for approval."""

    type: ClassVar[str] = "tool-approval-request"
    approval_id: str
    tool_call_id: str

    def fields(self) -> dict[str, Any]:
        return {"approvalId": self.approval_id, "toolCallId": self.tool_call_id}


@dataclass(frozen=True)
class ToolOutputDenied(Chunk):
    type: ClassVar[str] = "tool-output-denied"
    tool_call_id: str

    def fields(self) -> dict[str, Any]:
        return {"toolCallId": self.tool_call_id}


@dataclass(frozen=True)
class DataWaiting(Chunk):
    """A transient data part (`onData` sees it; the message keeps none): the reply waits for
    `ahead` earlier replies of its step, generated for teammates."""

    type: ClassVar[str] = "data-waiting"
    message_id: str
    ahead: int

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "data": {"messageId": self.message_id, "ahead": self.ahead},
            "transient": True,
        }


@dataclass(frozen=True)
class Error(Chunk):
    """Puts the client's chat in its error state; `error_text` is always one of our own."""

    type: ClassVar[str] = "error"
    error_text: str

    def fields(self) -> dict[str, Any]:
        return {"errorText": self.error_text}


@dataclass(frozen=True)
class Finish(Chunk):
    type: ClassVar[str] = "finish"
    finish_reason: str
    message_metadata: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        return {"finishReason": self.finish_reason, "messageMetadata": self.message_metadata}


DONE = b"data: [DONE]\n\n"  # other clients and proxies look for it; useChat ignores it
PING = b": ping\n\n"  # an SSE comment: a `data:` line that is not a chunk would break clients
