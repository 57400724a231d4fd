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
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from .domain import (
    BLOCKED_TEXT,
    BUSY_TEXT,
    CUT_TEXT,
    REPLACED_TEXT,
    SAVE_TEXT,
    STALL_TEXT,
    Cause,
    Ending,
    Event,
    Failed,
    Finished,
    KeepAlive,
    ReasoningDelta,
    Source,
    Started,
    TextDelta,
    metadata,
)
from .errors import ModelFailed, ModelUnavailable
from .ports import (
    Claim,
    FileParts,
    Model,
    ModelDone,
    ModelSource,
    ModelThought,
    WriteOutcome,
)

log = logging.getLogger("workshop_chat.chat.reply")


class FinalWriter(Protocol):
    """Where a reply's end is stored: the process's `Checkpointer`, which calls `settled`."""

    def write_final(self, reply: Reply) -> None: ...


@dataclass(frozen=True)
class Request:
    """What one generation asks the model."""

    system: str
    contents: list[tuple[str, str]]
    thinking_budget: int | None = None
    files: FileParts | None = None


@dataclass(frozen=True)
class Limits:
    """How long and how large one reply may grow."""

    stall_seconds: float
    reply_timeout_seconds: float
    max_reply_bytes: int


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

    # The generation feeds it -----------------------------------------------------------

    def add_text(self, text: str) -> bool:
        """Append model text; False once the reply has ended (stopped, replaced, cut)."""
        with self._cond:
            if self.ending is not None:
                return False
            self._parts.append(text)
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
            return self.size + len(self._sources)

    def content(self) -> tuple[str, str, tuple[Source, ...]]:
        """Text, thought summary and sources: what a write stores."""
        with self._cond:
            text, reasoning = "".join(self._parts), "".join(self._reasoning)
            return text, reasoning, tuple(self._sources.values())

    # The claim ---------------------------------------------------------------------------

    def claimed(self, claim: Claim, writer: FinalWriter) -> None:
        """The store confirmed the claim: listeners may now see the text."""
        with self._cond:
            self.claim, self._writer = claim, writer
            self._events.insert(0, Started(self.id, metadata(claim.created_at, self.model)))
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
    """Read the model into the reply, then decide its end. Runs as a task in the process loop.

    A silent upstream ends by the read deadline and a long one by the total limit, both here,
    in the task that reads: nothing else races it to the end.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_token: float | None = None
    ending: Ending
    try:
        async with asyncio.timeout(None) as deadline:
            ending = Ending("complete", "stop", model=model.name)
            stream = model.stream(
                request.system,
                request.contents,
                request.thinking_budget,
                request.files,
                reply.sent.set,
            )
            total = started + limits.reply_timeout_seconds
            while True:
                deadline.reschedule(min(total, loop.time() + limits.stall_seconds))
                item = await anext(stream, None)
                if item is None:
                    break
                if isinstance(item, ModelDone):
                    if item.blocked and not reply.size and not reply.add_text(BLOCKED_TEXT):
                        return
                    name = item.model or model.name
                    ending = Ending("complete", item.finish_reason, item.usage, name)
                    break
                if isinstance(item, ModelThought):
                    if not reply.add_reasoning(item.text):
                        return
                    continue
                if isinstance(item, ModelSource):
                    if not reply.add_source(item.url, item.title):
                        return
                    continue
                if not item.text:
                    continue
                if first_token is None:
                    first_token = loop.time() - started
                encoded = item.text.encode()
                room = limits.max_reply_bytes - reply.size
                if len(encoded) > room:
                    # Keep what still fits (whole characters): the reply ends at the limit.
                    head = encoded[:room].decode("utf-8", "ignore")
                    if head and not reply.add_text(head):
                        return
                    ending = Ending("complete", "length", model=model.name)
                    break
                if not reply.add_text(item.text):
                    return  # ended elsewhere (replaced, stopped): the reader stops here
            await stream.aclose()
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
                    "timeToFirstTokenMs": first_token and round(first_token * 1000),
                    "totalMs": round((loop.time() - started) * 1000),
                    "usage": ending.usage,
                    "replyBytes": reply.size,
                },
            },
        )


def _failed(
    text: str, model: str, cause: Cause = "model_error", retry_after: int | None = None
) -> Ending:
    return Ending("error", "error", None, model, Failed(text, cause=cause, retry_after=retry_after))
