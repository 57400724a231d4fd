"""A workshop is one piece of work: what each step found, and what a step knows of earlier ones.

After a reply settles, its step's outcome (findings, decisions, open questions) is refreshed
in the background with one non-streamed model call, at most one in flight per step. A turn
gets, in its system instruction, the outcomes of the steps before it in workshop order, never
its own (its history is there) nor a later one's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import aio
from .domain import Message

log = logging.getLogger("workshop_chat.memory")

WORKSHOP_ORDER = ("empathize", "define", "ideate", "prototype", "test")


@dataclass(frozen=True)
class Outcome:
    """One step's summary as the session remembers it (mirrored on the session document)."""

    step_id: str
    summary: str
    started_at: float  # the step's creation: orders steps outside the five known ones


def workshop_place(step_id: str, started_at: float) -> tuple[int, float, str]:
    """Sort key: the five steps in their order, then any other step by when it started."""
    if step_id in WORKSHOP_ORDER:
        return (0, float(WORKSHOP_ORDER.index(step_id)), step_id)
    return (1, started_at, step_id)


def _place(outcome: Outcome) -> tuple[int, float, str]:
    return workshop_place(outcome.step_id, outcome.started_at)


def earlier(step_id: str, outcomes: dict[str, Outcome], started_at: float | None) -> list[Outcome]:
    """The outcomes of the steps before `step_id`, in workshop order."""
    here = _place(Outcome(step_id, "", started_at if started_at is not None else float("inf")))
    return sorted(
        (o for o in outcomes.values() if o.step_id != step_id and o.summary and _place(o) < here),
        key=_place,
    )


def with_outcomes(system: str, outcomes: list[Outcome], budget: int) -> str:
    """The step's prompt, then what earlier steps found, nearest steps first within `budget`."""
    if not outcomes or budget <= 0:
        return system
    head = (
        "\n\nWhat the team found in the earlier steps of this workshop (summaries of those "
        "conversations; build on them, and do not repeat them back):"
    )
    blocks: list[str] = []
    room = budget - len(head)
    for outcome in reversed(outcomes):  # the nearest step is the most relevant
        block = f"\n\n## {outcome.step_id.capitalize()}\n{outcome.summary}"
        if len(block) > room:
            break
        blocks.insert(0, block)
        room -= len(block)
    return system + head + "".join(blocks) if blocks else system


class Debounce:
    """At most one refresh in flight per key; requests that land meanwhile make one more."""

    def __init__(self) -> None:
        self._running: set[Any] = set()
        self._again: set[Any] = set()
        self._lock = threading.Lock()

    def request(self, key: Any) -> bool:
        """True: start a refresh now. False: one is running and will run once more."""
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return False
            self._running.add(key)
            return True

    def finished(self, key: Any) -> bool:
        """True: run again (something landed meanwhile). False: the key is idle now."""
        with self._lock:
            if key in self._again:
                self._again.discard(key)
                return True
            self._running.discard(key)
            return False


class SummaryStore(Protocol):
    def step_for_summary(
        self, session_id: str, step_id: str
    ) -> tuple[list[Message], str | None, str | None]: ...

    def save_summary(
        self, session_id: str, step_id: str, summary: str, revision: str, started_at: float
    ) -> None: ...


Summarize = Callable[[str, str, int], Awaitable[tuple[str, dict[str, int] | None]]]

_INSTRUCTION = (
    "You keep the record of one step of a design-thinking workshop. From the conversation "
    "below (and the previous summary, if any), write the step's outcome: the key findings, "
    "the decisions the team made, and the open questions. Use short bullet points under those "
    "three headings. Write in the language the team writes in. Only what the team said or "
    "agreed: no advice, no new ideas. At most {chars} characters."
)


class Summaries:
    """Refreshes step outcomes off the request path; a failure only waits for the next reply."""

    def __init__(self, store: SummaryStore, summarize: Summarize, max_chars: int) -> None:
        self.store = store
        self.summarize = summarize
        self.max_chars = max_chars
        self.debounce = Debounce()

    def after_reply(self, session_id: str, step_id: str) -> None:
        key = (session_id, step_id)
        if self.debounce.request(key):
            aio.spawn(self._refresh_until_idle(key))

    async def _refresh_until_idle(self, key: tuple[str, str]) -> None:
        while True:
            try:
                await self._refresh(*key)
            except Exception:
                log.warning("step summary failed", exc_info=True, extra={"fields": _where(key)})
            if not self.debounce.finished(key):
                return

    async def _refresh(self, session_id: str, step_id: str) -> None:
        messages, previous, revision = await asyncio.to_thread(
            self.store.step_for_summary, session_id, step_id
        )
        transcript = _transcript(messages)
        if not transcript or revision is None:
            return
        prompt = transcript
        if previous:
            prompt = f"Previous summary:\n{previous}\n\nConversation:\n{transcript}"
        started = time.monotonic()
        instruction = _INSTRUCTION.format(chars=self.max_chars)
        summary, usage = await self.summarize(instruction, prompt, self.max_chars)
        summary = summary.strip()[: self.max_chars]
        if not summary:
            return
        started_at = messages[0].created_at
        await asyncio.to_thread(
            self.store.save_summary, session_id, step_id, summary, revision, started_at
        )
        log.info(
            "summary finished",
            extra={
                "fields": {
                    **_where((session_id, step_id)),
                    "usage": usage,
                    "totalMs": round((time.monotonic() - started) * 1000),
                    "summaryChars": len(summary),
                }
            },
        )


class Workshop:
    """What a turn's system instruction is made of, and what happens after its reply settles."""

    def __init__(
        self,
        prompts: Callable[[str], str],
        summaries: Summaries | None = None,
        thinking: Callable[[str], int | None] = lambda step_id: None,
    ) -> None:
        self.prompts = prompts
        self.summaries = summaries
        self.thinking = thinking

    def thinking_budget(self, step_id: str) -> int | None:
        """The step's own thinking budget, if its prompt file sets one."""
        return self.thinking(step_id)

    def system(self, step_id: str, conversation: Any, budget: int) -> str:
        """The step's prompt and the earlier steps' outcomes, within `budget` characters."""
        messages = conversation.messages
        started = messages[0].created_at if messages else None
        found = earlier(step_id, getattr(conversation, "outcomes", {}), started)
        return with_outcomes(self.prompts(step_id), found, budget)

    def after_reply(self, session_id: str, step_id: str) -> None:
        if self.summaries is not None:
            self.summaries.after_reply(session_id, step_id)


def _transcript(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        if m.role == "user" and m.text.strip():
            lines.append(f"Team: {m.text}")
        elif (
            m.role == "assistant"
            and m.text.strip()
            and m.status in ("complete", "stopped")
            and m.finish_reason != "content-filter"
        ):
            lines.append(f"Facilitator: {m.text}")
    return "\n\n".join(lines)


def _where(key: tuple[str, str]) -> dict[str, str]:
    return {"sessionId": key[0], "stepId": key[1]}
