"""One reply's life: its claim, its text, its listeners, and the one place its end is decided.

A `Reply` is registered per process before any I/O, so identical requests on one instance
collapse onto it. The model stream runs as a task in the process's event loop
(`generation.drive`) and feeds the reply; request threads only listen. A reply's end, in order:

1. `Reply.end(ending)`: decided once, under the reply's lock; the text is frozen here.
2. `FinalWriter.write_final(reply)`: the process's `Checkpointer` stores that text and end.
3. `Reply.settled(outcome)`: the write's outcome picks the one end event listeners are told.
4. `on_settled(reply)`: the turn forgets it, and its step's outcome is refreshed if it grew.

So the text a client was told finished is the text stored, and `complete` means Gemini said so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Protocol

from .domain import (
    REPLACED_TEXT,
    SAVE_TEXT,
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
from .ports import (
    Claim,
    WriteOutcome,
)


class FinalWriter(Protocol):
    """Where a reply's end is stored: the process's `Checkpointer`, which calls `settled`."""

    def write_final(self, reply: Reply) -> None: ...


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
        # The trace of the request that began it (telemetry's handle): its final write and
        # the summary it causes are told apart by it.
        self.trace: object = None

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
