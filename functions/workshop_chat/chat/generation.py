"""A generation: the model read into a reply, round after round while it calls tools, and the
reply's end decided from what the model did (`drive`). It runs as a task in the process's event
loop; `reply.Reply` holds what it produced and tells the listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from .board import ToolSpec
from .context import reply_contents
from .domain import (
    BLOCKED_TEXT,
    BUSY_TEXT,
    CUT_TEXT,
    STALL_TEXT,
    Cause,
    Ending,
    Failed,
    Message,
    ToolCall,
)
from .errors import ModelFailed, ModelUnavailable
from .ports import (
    FileParts,
    Model,
    ModelDone,
    ModelItem,
    ModelSource,
    ModelThought,
    ModelToolCall,
)
from .reply import Reply
from .telemetry import QUIET, ModelCall, Span, Telemetry, tokens
from .tools import Toolbox

log = logging.getLogger("workshop_chat.chat.generation")


@dataclass(frozen=True)
class Request:
    """What one generation asks the model, and the tools it may call (None: none)."""

    system: str
    contents: list[tuple[str, str]]
    thinking_budget: int | None = None
    files: FileParts | None = None
    calls: dict[int, tuple[ToolCall, ...]] | None = None  # earlier turns' calls and results
    toolbox: Toolbox | None = None
    carry: Carry | None = None  # the stored reply this generation carries on


@dataclass(frozen=True)
class Carry:
    """A reply that waited for approvals, and the team's answers: (call, approved, reason)."""

    reply: Message
    answers: tuple[tuple[ToolCall, bool, str | None], ...]


@dataclass(frozen=True)
class Limits:
    """How long and how large one reply may grow."""

    stall_seconds: float
    reply_timeout_seconds: float
    max_reply_bytes: int
    max_tool_rounds: int = 4


async def drive(
    reply: Reply,
    model: Model,
    request: Request,
    limits: Limits,
    where: dict[str, str] | None = None,
    trace: str | None = None,
    telemetry: Telemetry = QUIET,
) -> None:
    """Read the model into the reply, round after round while it calls tools, then decide its
    end. Runs as a task in the process loop.

    A silent upstream ends by the read deadline and a long one by the total limit, both here,
    in the task that reads: nothing else races it to the end. Each round that called tools is
    answered with their results in the next; the last round allowed declares no tools, so
    the model answers in words.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    rounds = _Rounds(request)
    ending: Ending
    first = 0
    try:
        async with asyncio.timeout(None) as deadline:
            total = started + limits.reply_timeout_seconds
            if request.carry is not None and request.toolbox is not None:
                decided = await _decide(reply, request.toolbox, request.carry, limits.stall_seconds)
                if decided is None:
                    return
                rounds.carried(decided)
                first = len(decided.steps) + 1  # its rounds so far count against the limit
            for n in range(first, max(first, limits.max_tool_rounds) + 1):
                if n and not reply.next_step():
                    return
                declared = rounds.declared(n < limits.max_tool_rounds)
                stream = model.stream(
                    request.system,
                    rounds.contents,
                    request.thinking_budget,
                    request.files,
                    reply.sent.set,
                    tools=declared,
                    calls=rounds.calls,
                )
                step_id = (where or {}).get("stepId", "")
                with _model_span(telemetry, model.name, step_id, reply.id) as span:
                    asked = loop.time()
                    try:
                        step = await _read_round(
                            reply, stream, limits, deadline, total, rounds, model, span
                        )
                    finally:
                        _model_call(telemetry, rounds, model.name, step_id, loop.time() - asked)
                    if step is not None:
                        _model_ended(span, rounds, step[0])
                if step is None:
                    return  # ended elsewhere (replaced, stopped): the reader stops here
                ending, called = step
                if not (called and declared) or request.toolbox is None:
                    break
                done = await _run_tools(reply, request.toolbox, called, limits.stall_seconds)
                if done is None:
                    return
                if any(c.state == "approval-requested" for c in done):
                    ending = replace(ending, finish_reason="tool-calls")
                    break  # the reply waits for the team; their answer carries it on
                rounds.answered(reply.text(), done)
            ending = replace(ending, usage=rounds.usage or None)
    except TimeoutError:
        ending = _failed(STALL_TEXT, model.name)
    except ModelUnavailable as exc:
        ending = _failed(BUSY_TEXT, model.name, "model_unavailable", exc.retry_after)
    except ModelFailed:
        ending = _failed(CUT_TEXT, model.name)
    except Exception:
        log.error("generation failed unexpectedly", exc_info=True, extra={"trace": trace})
        ending = _failed(CUT_TEXT, model.name)
    finally:
        reply.sent.set()
    if reply.end(ending):
        telemetry.reply_ended(
            ending.model or model.name, (where or {}).get("stepId", ""), ending.status
        )
        log.info(
            "turn finished",
            extra={
                "trace": trace,
                "fields": {
                    **(where or {}),
                    "replyId": reply.id,
                    "model": ending.model,
                    "status": ending.status,
                    "finishReason": ending.finish_reason,
                    "timeToFirstTokenMs": rounds.first_token
                    and round((rounds.first_token - started) * 1000),
                    "totalMs": round((loop.time() - started) * 1000),
                    "usage": ending.usage,
                    "replyBytes": reply.size,
                    "modelRounds": rounds.count,
                },
            },
        )


class _Rounds:
    """What the model is asked, round after round: the turn's contents, then each round's
    words and calls as a model content and their results as a user content. Usage adds up."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.contents = list(request.contents)
        self.calls: dict[int, tuple[ToolCall, ...]] = dict(request.calls or {})
        self.usage: dict[str, int] = {}
        self.round_usage: dict[str, int] = {}  # the last round's
        self.round_first_token: float | None = None  # seconds from asking, the last round's
        self.first_token: float | None = None
        self.count = 0
        self._said = 0  # the reply's text the contents already hold

    def declared(self, allowed: bool) -> tuple[ToolSpec, ...]:
        self.count += 1
        toolbox = self.request.toolbox
        return toolbox.specs if allowed and toolbox is not None else ()

    def add_usage(self, usage: dict[str, int] | None) -> None:
        self.round_usage = dict(usage or {})
        for key, value in (usage or {}).items():
            self.usage[key] = self.usage.get(key, 0) + value

    def carried(self, stored: Message) -> None:
        """A carried-on reply's rounds so far, its answered calls' results included."""
        for role, text, _, calls in reply_contents(stored):
            self.contents.append((role, text))
            if calls:
                self.calls[len(self.contents) - 1] = calls
        self._said = len(stored.text)

    def answered(self, text: str, done: tuple[ToolCall, ...]) -> None:
        self.contents.append(("model", text[self._said :]))
        self.calls[len(self.contents) - 1] = done
        self.contents.append(("user", ""))
        self.calls[len(self.contents) - 1] = done
        self._said = len(text)


async def _read_round(
    reply: Reply,
    stream: AsyncGenerator[ModelItem, None],
    limits: Limits,
    deadline: asyncio.Timeout,
    total: float,
    rounds: _Rounds,
    model: Model,
    span: Span,
) -> tuple[Ending, list[ModelToolCall]] | None:
    """One model round into the reply: its end as the model gave it, and the calls it made;
    None once the reply ended elsewhere."""
    loop = asyncio.get_running_loop()
    asked = loop.time()
    rounds.round_usage, rounds.round_first_token = {}, None
    ending = Ending("complete", "stop", model=model.name)
    called: list[ModelToolCall] = []
    while True:
        deadline.reschedule(min(total, loop.time() + limits.stall_seconds))
        item = await anext(stream, None)
        if item is None:
            break
        if isinstance(item, ModelDone):
            rounds.add_usage(item.usage)
            if item.blocked and not reply.size and not reply.add_text(BLOCKED_TEXT):
                return None
            name = item.model or model.name
            ending = Ending("complete", item.finish_reason, None, name)
            break
        if isinstance(item, ModelThought):
            if not reply.add_reasoning(item.text):
                return None
            continue
        if isinstance(item, ModelSource):
            if not reply.add_source(item.url, item.title):
                return None
            continue
        if isinstance(item, ModelToolCall):
            called.append(item)
            continue
        if not item.text:
            continue
        if rounds.round_first_token is None:
            rounds.round_first_token = loop.time() - asked
            span.event("first_token", {"workshop_chat.seconds": rounds.round_first_token})
        if rounds.first_token is None:
            rounds.first_token = loop.time()
        encoded = item.text.encode()
        room = limits.max_reply_bytes - reply.size
        if len(encoded) > room:
            # Keep what still fits (whole characters): the reply ends at the limit.
            head = encoded[:room].decode("utf-8", "ignore")
            if head and not reply.add_text(head):
                return None
            await stream.aclose()
            return Ending("complete", "length", model=model.name), []
        if not reply.add_text(item.text):
            return None
    await stream.aclose()
    return ending, called


async def _decide(reply: Reply, toolbox: Toolbox, carry: Carry, wait: float) -> Message | None:
    """The team's answers into the reply (the approved calls run), before the next round:
    the stored reply as it now stands; None once the reply ended elsewhere."""
    if not await asyncio.to_thread(reply.wait_claim, wait):
        return None
    tools = {c.call_id: c for c in carry.reply.tools}
    for call, approved, reason in carry.answers:
        epoch = reply.claim.epoch if reply.claim is not None else ""
        result = await asyncio.to_thread(toolbox.decide, call, approved, reason, epoch)
        if not reply.tool_done(result):
            return None
        tools[call.call_id] = result
    return replace(carry.reply, tools=tuple(tools.values()))


async def _run_tools(
    reply: Reply, toolbox: Toolbox, called: list[ModelToolCall], wait: float
) -> tuple[ToolCall, ...] | None:
    """Each call into the reply, run (in a thread: the store is blocking), and its result
    into the reply; None once the reply ended elsewhere. Nothing runs before the reply's
    claim holds: the model may call a tool before the claim's commit is back, and a reply
    that lost its claim writes nothing."""
    if not await asyncio.to_thread(reply.wait_claim, wait):
        return None
    done: list[ToolCall] = []
    for item in called:
        call = reply.add_tool_call(item.name, item.args, item.signature)
        if call is None:
            return None
        epoch = reply.claim.epoch if reply.claim is not None else ""
        result = await asyncio.to_thread(toolbox.run, call, epoch)
        if not reply.tool_done(result):
            return None
        done.append(result)
    return tuple(done)


def _model_span(telemetry: Telemetry, model: str, step_id: str, reply_id: str) -> Any:
    """One model round, after the GenAI conventions: `chat <model>`."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "workshop_chat.step": step_id,
        "workshop_chat.reply.id": reply_id,
    }
    return telemetry.span(f"chat {model}", attributes, kind="client")


def _model_ended(span: Span, rounds: _Rounds, ending: Ending) -> None:
    given, said = tokens(rounds.round_usage)
    span.set(
        {
            "gen_ai.response.finish_reasons": (ending.finish_reason,),
            "gen_ai.response.model": ending.model or "",
            "gen_ai.usage.input_tokens": given,
            "gen_ai.usage.output_tokens": said,
        }
    )


def _model_call(
    telemetry: Telemetry, rounds: _Rounds, model: str, step_id: str, seconds: float
) -> None:
    usage = rounds.round_usage
    given, said = tokens(usage)
    failed = None if usage else "incomplete"
    call = ModelCall("chat", model, step_id, seconds, given, said, rounds.round_first_token, failed)
    telemetry.model_call(call)


def _failed(
    text: str, model: str, cause: Cause = "model_error", retry_after: int | None = None
) -> Ending:
    return Ending("error", "error", None, model, Failed(text, cause=cause, retry_after=retry_after))
