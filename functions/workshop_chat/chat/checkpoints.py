"""Every reply in flight in this process, written together: checkpoints, leases and finals.

One thread per process, not one per stream. About once a second it gathers the replies with
new text (checkpoints) or an old lease (renewals) and sends them as one batched write, each
write with its own precondition, so a thousand streams cost a few RPCs a second. A final write
wakes it at once; finals that arrive while a batch is in flight go out in the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from .domain import Ending, Source
from .reply import LOST, STOP, UNSTORED, WROTE, Reply

log = logging.getLogger("workshop_chat.chat.checkpoints")


@dataclass(frozen=True)
class ReplyWrite:
    """One reply's write: text to store (None renews the lease only), and its end if final."""

    claim: object
    text: str | None
    ending: Ending | None = None
    reasoning: str = ""
    sources: tuple[Source, ...] = ()


class BatchStore(Protocol):
    def write_replies(self, writes: list[ReplyWrite]) -> list[str]:
        """One outcome per write, in order: "wrote", "lost", "unstored" or "stop"."""


@dataclass(frozen=True)
class Cadence:
    checkpoint_seconds: float = 1.0
    lease_seconds: float = 8.0
    # A final that could not be stored is tried again this many times, backing off.
    final_attempts: int = 5


@dataclass
class _Final:
    reply: Reply
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class _State:
    live: dict[int, Reply] = field(default_factory=dict)
    finals: list[_Final] = field(default_factory=list)


# A reply due for a write, and how far it had grown (None: a lease renewal, no content).
_Due = tuple[Reply, int | None]


class Checkpointer:
    def __init__(self, store: BatchStore, cadence: Cadence) -> None:
        self.store = store
        self.cadence = cadence
        # Renewals also carry stop requests made on other instances: at least once a second.
        self.renew_seconds = min(cadence.checkpoint_seconds, cadence.lease_seconds / 4)
        self._state = _State()
        self._cond = threading.Condition()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.batches = 0  # counted for tests and the benchmark

    # Replies register and finish ---------------------------------------------------------

    def track(self, reply: Reply) -> None:
        with self._cond:
            reply.last_write = time.monotonic()
            self._state.live[id(reply)] = reply
            self._ensure_thread()

    def finish(self, reply: Reply) -> None:
        with self._cond:
            self._state.live.pop(id(reply), None)
            self._state.finals.append(_Final(reply))
            self._ensure_thread()
            self._cond.notify_all()

    def live_count(self) -> int:
        with self._cond:
            return len(self._state.live)

    # The thread --------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        import os

        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
            self._thread.start()

    def _tick(self) -> float:
        return self.renew_seconds / 2

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                wake = min((f.not_before for f in self._state.finals), default=now + self._tick())
                if wake > now:
                    self._cond.wait(min(wake - now, self._tick()))
            try:
                self.flush()
            except Exception:
                log.error("checkpoint batch failed", exc_info=True)
                time.sleep(self._tick())

    def flush(self, everything: bool = False) -> int:
        """Write what is due now (with `everything`, all live text, as on SIGTERM)."""
        with self._flushing:
            now = time.monotonic()
            with self._cond:
                finals = [f for f in self._state.finals if f.not_before <= now]
                self._state.finals = [f for f in self._state.finals if f.not_before > now]
                live = list(self._state.live.values())
            writes: list[ReplyWrite] = []
            targets: list[Reply] = []
            for final in finals:
                reply = final.reply
                text, reasoning, sources = reply.content()
                writes.append(ReplyWrite(reply.claim, text, reply.ending, reasoning, sources))
                targets.append(reply)
            checkpoints = self._due(live, now, everything)
            for reply, progress in checkpoints:
                if progress is None:
                    writes.append(ReplyWrite(reply.claim, None))
                else:
                    text, reasoning, sources = reply.content()
                    writes.append(ReplyWrite(reply.claim, text, None, reasoning, sources))
                targets.append(reply)
            if not writes:
                return 0
            outcomes = self.store.write_replies(writes)
            self.batches += 1
            for final, outcome in zip(finals, outcomes, strict=False):
                self._after_final(final, outcome)
            for (reply, progress), outcome in zip(
                checkpoints, outcomes[len(finals) :], strict=True
            ):
                self._after_checkpoint(reply, progress, outcome, now)
            return len(checkpoints)

    def _due(self, live: list[Reply], now: float, everything: bool) -> list[_Due]:
        due: list[_Due] = []
        for reply in live:
            if reply.ending is not None:
                continue
            age = now - reply.last_write
            progress = reply.progress()
            slack = self._tick() / 2  # a write due just after this tick goes out now
            if progress != reply.stored_progress and (
                everything or age + slack >= self.cadence.checkpoint_seconds
            ):
                due.append((reply, progress))
            elif age + slack >= self.renew_seconds:
                due.append((reply, None))  # silent model (thinking): renew the lease only
        return due

    def _after_checkpoint(
        self, reply: Reply, progress: int | None, outcome: str, now: float
    ) -> None:
        if outcome == WROTE:
            reply.last_write = now
            if progress is not None:
                reply.stored_progress = progress
        elif outcome == LOST:
            with self._cond:
                self._state.live.pop(id(reply), None)
            reply.end(Ending("error", "error"), write=False)
        elif outcome == STOP:
            reply.stop()  # asked on another instance: the final write goes out next
        # UNSTORED: skipped; the next tick tries again with the text it has then.

    def _after_final(self, final: _Final, outcome: str) -> None:
        if outcome != UNSTORED:
            final.reply.settled(outcome)
            return
        final.attempts += 1
        if final.attempts >= self.cadence.final_attempts:
            log.error(
                "reply could not be stored",
                extra={"fields": {"replyId": final.reply.id, "replyBytes": final.reply.size}},
            )
            final.reply.settled(UNSTORED)
            return
        final.not_before = time.monotonic() + 0.25 * 2 ** (final.attempts - 1)
        with self._cond:
            self._state.finals.append(final)
