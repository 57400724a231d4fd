"""One reply's life: its claim, its text, its listeners, and the one place its end is decided.

A `Reply` is registered per process before any I/O, so identical requests on one instance
collapse onto it. The model stream runs as a task in the process's event loop (`drive`) and
feeds the reply; request threads only listen. A reply's end, in order:

1. `Reply.end(ending)`: decided once, under the reply's lock; the text is frozen here.
2. `FinalWriter.write_final(reply)`: the process's `Checkpointer` stores that text and end.
3. `Reply.settled(outcome)`: the write's outcome picks the one end event listeners are told.
4. `on_settled(reply)`: the turn forgets it, and its step's outcome is refreshed if it grew.

So the text a client was told finished is the text stored, and `complete` means Gemini said so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .board import ToolSpec
from .context import reply_contents
from .domain import (
    BLOCKED_TEXT,
    BUSY_TEXT,
    CUT_TEXT,
    REPLACED_TEXT,
    SAVE_TEXT,
    STALL_TEXT,
    Cause,
    Content,
    Ending,
    Event,
    Failed,
    Finished,
    KeepAlive,
    Message,
    NextStep,
    ReasoningDelta,
    Source,
    Started,
    TextDelta,
    ToolCall,
    ToolDone,
    ToolStarted,
    metadata,
)
from .errors import ModelFailed, ModelUnavailable
from .ports import (
    Claim,
    FileParts,
    Model,
    ModelDone,
    ModelItem,
    ModelSource,
    ModelThought,
    ModelToolCall,
    WriteOutcome,
)
from .tools import Toolbox

log = logging.getLogger("workshop_chat.chat.reply")


class FinalWriter(Protocol):
    """Where a reply's end is stored: the process's `Checkpointer`, which calls `settled`."""

    def write_final(self, reply: Reply) -> None: ...


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


class Reply:
    """The events of one reply, kept whole so that a late listener replays them all."""

    def __init__(
        self, reply_id: str, model: str | None, on_settled: Callable[[Reply], None]
    ) -> None:
        self.id = reply_id
        self.model = model
        self._on_settled = on_settled
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._parts: list[str] = []
        self._reasoning: list[str] = []
        self._sources: dict[str, Source] = {}  # by url: each source once
        self._tools: dict[str, ToolCall] = {}  # by call id, in the order they came
        self._steps: list[int] = []  # text offsets where each round after the first began
        self._length = 0  # characters of text
        self.size = 0
        self.claim: Claim | None = None
        self.lost = False  # the claim went to another request before it was confirmed
        self.ending: Ending | None = None
        self.closed = False  # the end event is published: nothing more will come
        self.stored = False  # its final write landed
        self.task: Future[Any] | None = None
        # Set once the model request is on its way: the claim waits for it, so the two do not
        # compete for the interpreter while the request is built.
        self.sent = threading.Event()
        self._writer: FinalWriter | None = None
        self.continued = False  # carries on a stored reply (`carry_on`)

    # The generation feeds it -----------------------------------------------------------

    def add_text(self, text: str) -> bool:
        """Append model text; False once the reply has ended (stopped, replaced, cut)."""
        with self._cond:
            if self.ending is not None:
                return False
            self._parts.append(text)
            self._length += len(text)
            self.size += len(text.encode())
            self._events.append(TextDelta(text))
            self._cond.notify_all()
            return True

    def add_reasoning(self, text: str) -> bool:
        """Append thought summary text (before the answer; never part of it)."""
        with self._cond:
            if self.ending is not None:
                return False
            self._reasoning.append(text)
            self.size += len(text.encode())
            self._events.append(ReasoningDelta(text))
            self._cond.notify_all()
            return True

    def add_source(self, url: str, title: str | None) -> bool:
        """Record a grounding source once; its id is unique within the reply."""
        with self._cond:
            if self.ending is not None:
                return False
            if url not in self._sources:
                source = Source(f"{self.id}-source-{len(self._sources) + 1}", url, title)
                self._sources[url] = source
                self._events.append(source)
                self._cond.notify_all()
            return True

    def add_tool_call(self, name: str, args: Any, signature: str | None) -> ToolCall | None:
        """The model called a tool: placed after the text so far, in the current round."""
        with self._cond:
            if self.ending is not None:
                return None
            n = len(self._tools)
            call = ToolCall(f"{self.id}-call-{n + 1}", name, args, len(self._steps), self._length)
            call = replace(call, signature=signature)
            self._tools[call.call_id] = call
            self.size += len(repr(args))
            self._events.append(ToolStarted(call))
            self._cond.notify_all()
            return call

    def tool_done(self, call: ToolCall) -> bool:
        """A call's result; False once the reply has ended (the call stays as it was)."""
        with self._cond:
            if self.ending is not None:
                return False
            self._tools[call.call_id] = call
            self.size += len(repr(call.output)) + len(call.error_text or "")
            self._events.append(ToolDone(call))
            self._cond.notify_all()
            return True

    def next_step(self) -> bool:
        """The model is asked again, with the results: a new step begins."""
        with self._cond:
            if self.ending is not None:
                return False
            self._steps.append(self._length)
            self._events.append(NextStep())
            self._cond.notify_all()
            return True

    @property
    def worth_summarizing(self) -> bool:
        """Stored, and something the team can build on: not a failure, not an empty stop."""
        ending = self.ending
        return self.stored and ending is not None and ending.status != "error" and bool(self._parts)

    def text(self) -> str:
        with self._cond:
            return "".join(self._parts)

    def progress(self) -> int:
        """Grows with everything the reply holds: tells a checkpoint whether anything is new."""
        with self._cond:
            return self.size + len(self._sources) + len(self._events)

    def content(self) -> Content:
        """What a write stores."""
        with self._cond:
            return Content(
                "".join(self._parts),
                "".join(self._reasoning),
                tuple(self._sources.values()),
                tuple(self._tools.values()),
                tuple(self._steps),
            )

    def carry_on(self, stored: Message) -> None:
        """Begin from a stored reply's content (one that waited for the team's approval): it
        is stored again with what this generation adds, and listeners get only that."""
        with self._cond:
            self._parts = [stored.text] if stored.text else []
            self._length = len(stored.text)
            self._reasoning = [stored.reasoning] if stored.reasoning else []
            self._sources = {s.url: s for s in stored.sources}
            self._tools = {c.call_id: c for c in stored.tools}
            self._steps = list(stored.steps)
            self.size = len(stored.text.encode()) + len(stored.reasoning.encode())
            self.continued = True

    # The claim ---------------------------------------------------------------------------

    def claimed(self, claim: Claim, writer: FinalWriter) -> None:
        """The store confirmed the claim: listeners may now see the text."""
        with self._cond:
            self.claim, self._writer = claim, writer
            meta = metadata(claim.created_at, self.model)
            self._events.insert(0, Started(self.id, meta, self.continued))
            ended = self.ending is not None
            self._cond.notify_all()
        if ended:  # the model finished before the claim's commit came back
            writer.write_final(self)

    def abandon(self) -> None:
        """The claim went elsewhere (or could not be made): cancel the model call, tell joiners."""
        with self._cond:
            self.lost = True
            self.closed = True
            self._cond.notify_all()
        self._cancel()
        self._on_settled(self)

    def wait_closed(self, timeout: float) -> bool:
        """Until listeners have been told the end (so the final write has landed or failed)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.closed, timeout)

    def wait_claim(self, timeout: float) -> bool:
        """For a request that collapsed onto this one: True once claimed, False if abandoned."""
        with self._cond:
            self._cond.wait_for(lambda: self.claim is not None or self.lost, timeout)
            return self.claim is not None

    # The end: decided once ---------------------------------------------------------------

    def stop(self) -> bool:
        """Stop where it is: the text so far is the reply, stored `stopped`."""
        return self.end(Ending("stopped", "stop", model=self.model))

    def end(self, ending: Ending, write: bool = True) -> bool:
        """Decide how the reply ends; False if it had already ended.

        With `write`, the final state is stored first and listeners are told after
        (`settled`); without, the store belongs to a newer generation and they are told now.
        Before the claim holds, the end waits for it (`claimed` writes it then).
        """
        with self._cond:
            if self.ending is not None:
                return False
            self.ending = ending
            writer = self._writer if self.claim is not None else None
        self._cancel()
        if not write:
            self.settled(WriteOutcome.LOST)
        elif writer is not None:
            writer.write_final(self)
        return True

    def settled(self, outcome: WriteOutcome) -> None:
        """The final write's outcome: publish the one end event listeners will see."""
        with self._cond:
            if self.closed or self.ending is None:
                return
            ending = self.ending
            meta = metadata(self.claim.created_at if self.claim else time.time(), ending.model)
            if ending.usage:
                meta["usage"] = ending.usage
            if ending.status == "stopped":
                meta["status"] = "stopped"
            if outcome is WriteOutcome.LOST:
                event: Event = Failed(REPLACED_TEXT, cause="replaced")
            elif outcome is WriteOutcome.UNSTORED:
                event = Failed(SAVE_TEXT, cause="storage", metadata=meta)
            elif ending.failure is not None:
                event = Failed(
                    ending.failure.error_text,
                    cause=ending.failure.cause,
                    metadata=meta,
                    retry_after=ending.failure.retry_after,
                )
            else:
                event = Finished(ending.finish_reason, meta)
            self._events.append(event)
            self.closed = True
            self.stored = outcome is WriteOutcome.WROTE
            self._cond.notify_all()
        self._on_settled(self)

    def _cancel(self) -> None:
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    # Listeners ---------------------------------------------------------------------------

    def listen(self, keepalive: float) -> Iterator[Event]:
        """Every event from the start, then live ones; pings while nothing happens."""
        index = 0
        while True:
            with self._cond:
                ready = self.claim is not None
                if not (ready and index < len(self._events)) and not self.closed:
                    self._cond.wait(keepalive)
                    ready = self.claim is not None
                pending = self._events[index:] if ready else []
                index += len(pending)
                finished = self.closed and index >= len(self._events)
            if not pending and not finished:
                yield KeepAlive()
            yield from pending
            if finished:
                return


async def drive(
    reply: Reply,
    model: Model,
    request: Request,
    limits: Limits,
    where: dict[str, str] | None = None,
    trace: str | None = None,
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
                step = await _read_round(reply, stream, limits, deadline, total, rounds, model)
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
        self.first_token: float | None = None
        self.count = 0
        self._said = 0  # the reply's text the contents already hold

    def declared(self, allowed: bool) -> tuple[ToolSpec, ...]:
        self.count += 1
        toolbox = self.request.toolbox
        return toolbox.specs if allowed and toolbox is not None else ()

    def add_usage(self, usage: dict[str, int] | None) -> None:
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
) -> tuple[Ending, list[ModelToolCall]] | None:
    """One model round into the reply: its end as the model gave it, and the calls it made;
    None once the reply ended elsewhere."""
    loop = asyncio.get_running_loop()
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
        result = await asyncio.to_thread(toolbox.decide, call, approved, reason)
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
        result = await asyncio.to_thread(toolbox.run, call)
        if not reply.tool_done(result):
            return None
        done.append(result)
    return tuple(done)


def _failed(
    text: str, model: str, cause: Cause = "model_error", retry_after: int | None = None
) -> Ending:
    return Ending("error", "error", None, model, Failed(text, cause=cause, retry_after=retry_after))
