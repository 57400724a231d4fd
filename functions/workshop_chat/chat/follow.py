"""A reply generated elsewhere, as a stream: replayed when it is stored, relayed from its
checkpoints while another instance generates it, taken over when that instance died."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from .domain import (
    CUT_TEXT,
    REPLACED_TEXT,
    Event,
    Failed,
    Finished,
    KeepAlive,
    Message,
    NextStep,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolDone,
    ToolStarted,
    Waiting,
    layout,
    metadata,
)
from .errors import StoreUnavailable
from .ports import Conversations
from .queue import ahead_of

# Take a lapsed reply over: its new generation's events, or None when another request won.
TakeOver = Callable[[Message], Iterator[Event] | None]


def follow(
    store: Conversations,
    key: tuple[str, str],
    reply: Message,
    take_over: TakeOver,
    model: str,
    every: float,
) -> Iterator[Event]:
    """Relay another instance's checkpoints of `reply` until it settles.

    Nothing is relayed until the reply is seen to move (a checkpoint or a lease renewal), so a
    retry after a crash relays none of the dead generation's text: when the lease lapses, this
    request takes the reply over and streams the new generation whole. While it streams, the
    document names no model yet: every instance runs the same `model`.
    """
    sent, thought, started, alive = "", "", False, False
    relayed = Relayed()
    waits = -1  # how many replies it was told wait ahead of it (-1: not told yet)
    while True:
        if reply.lapsed and not started:
            events = take_over(reply)
            if events is not None:
                yield from events
                return
        elif reply.lapsed:
            take_over(reply)
            yield Failed(CUT_TEXT)
            return
        elif reply.status == "queued":  # waiting its turn on another instance
            if waits < 0:  # said once: the line is read again only by the one who waits
                try:
                    ahead = ahead_of(store.pending(*key), reply.id)
                except StoreUnavailable:
                    ahead = None  # told at the next look
                if ahead is not None:
                    waits = len(ahead)
                    yield Waiting(reply.id, waits)
        elif reply.status != "streaming" and not started:
            yield from replay(reply)
            return
        elif alive:
            if not started:
                yield Started(reply.id, metadata(reply.created_at, reply.model or model))
                started = True
            if not (reply.text.startswith(sent) and reply.reasoning.startswith(thought)):
                yield Failed(REPLACED_TEXT, cause="replaced")  # regenerated meanwhile
                return
            if len(reply.reasoning) > len(thought):
                yield ReasoningDelta(reply.reasoning[len(thought) :])
                thought = reply.reasoning
            yield from relayed.news(reply)
            sent = reply.text
            if reply.status != "streaming":
                yield from reply.sources
                yield ending(reply)
                return
        time.sleep(every)
        try:
            fresh = store.reply(key[0], key[1], reply.id)
        except StoreUnavailable:
            if not started:
                raise  # nothing said yet: an honest 503
            yield Failed(CUT_TEXT, cause="storage")
            return
        if fresh is None:
            yield Failed(REPLACED_TEXT, cause="replaced")
            return
        alive = alive or fresh.version != reply.version
        reply = fresh
        yield KeepAlive()


class Relayed:
    """What a follower has relayed of a reply's text, tool calls and steps: each checkpoint
    then gives only what is new, in the order it happened."""

    def __init__(self) -> None:
        self.text = 0
        self.started: set[str] = set()
        self.done: set[str] = set()
        self.steps = 0

    def news(self, reply: Message) -> Iterator[Event]:
        at = steps = 0
        for event in layout(reply.text, reply.tools, reply.steps):
            if isinstance(event, TextDelta):
                end = at + len(event.text)
                if end > self.text:
                    yield TextDelta(reply.text[max(at, self.text) : end])
                    self.text = end
                at = end
            elif isinstance(event, ToolStarted) and event.call.call_id not in self.started:
                self.started.add(event.call.call_id)
                yield event
            elif isinstance(event, ToolDone) and event.call.call_id not in self.done:
                self.done.add(event.call.call_id)
                yield event
            elif isinstance(event, NextStep):
                steps += 1
                if steps > self.steps:
                    self.steps = steps
                    yield event


def replay(reply: Message) -> list[Event]:
    """A stored reply as a stream: its thoughts, its text and tool calls in the order they
    came, and its sources, then its end."""
    events: list[Event] = [Started(reply.id, metadata(reply.created_at, reply.model))]
    if reply.reasoning:
        events.append(ReasoningDelta(reply.reasoning))
    events += layout(reply.text, reply.tools, reply.steps)
    events.extend(reply.sources)
    events.append(ending(reply))
    return events


def ending(reply: Message) -> Event:
    meta = metadata(reply.created_at, reply.model, reply.usage)
    if reply.status == "error":
        return Failed(CUT_TEXT, metadata=meta)
    if reply.status == "stopped":
        meta["status"] = "stopped"
    return Finished(reply.finish_reason or "stop", meta)
