"""Every reply in flight in this process, written together: checkpoints, leases and finals.

One thread per process, not one per stream. About once a second it gathers the replies with
new text (checkpoints) or an old lease (renewals) and sends them as one batched write, each
write with its own precondition, so a thousand streams cost a few RPCs a second. A final write
wakes it at once; finals that arrive while a batch is in flight go out in the next one.

What it knows of each reply (how much it last stored, when it last wrote) is its own: the
`Reply` only holds what the model said and how it ended.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

from .domain import Ending
from .ports import ReplyStore, ReplyWrite, WriteOutcome
from .reply import Reply
from .telemetry import QUIET, Attributes, Span, Telemetry

log = logging.getLogger("workshop_chat.chat.checkpoints")


@dataclass(frozen=True)
class Cadence:
    checkpoint_seconds: float
    lease_seconds: float
    # A final that could not be stored is tried again this many times, backing off.
    final_attempts: int = 5


@dataclass
class _Live:
    """A reply being written: how far it had grown at its last stored checkpoint, and when
    anything of it was last written (its lease)."""

    reply: Reply
    stored_progress: int = 0
    last_write: float = field(default_factory=time.monotonic)


@dataclass
class _Final:
    reply: Reply
    attempts: int = 0
    not_before: float = 0.0


# A reply due for a write, and how far it had grown (None: a lease renewal, no content).
_Due = tuple[_Live, int | None]


class Checkpointer:
    def __init__(self, store: ReplyStore, cadence: Cadence, telemetry: Telemetry = QUIET) -> None:
        self.store = store
        self.cadence = cadence
        self.telemetry = telemetry
        # Renewals also carry stop requests made on other instances: at least once a second.
        self.renew_seconds = min(cadence.checkpoint_seconds, cadence.lease_seconds / 4)
        self._live: dict[int, _Live] = {}
        self._finals: list[_Final] = []
        self._cond = threading.Condition()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.batches = 0  # counted for tests and the benchmark

    # Replies register and finish ---------------------------------------------------------

    def track(self, reply: Reply) -> None:
        with self._cond:
            self._live[id(reply)] = _Live(reply)
            self._ensure_thread()

    def write_final(self, reply: Reply) -> None:
        """The reply ended: store its text and end, then tell it how that went (`settled`)."""
        with self._cond:
            self._live.pop(id(reply), None)
            self._finals.append(_Final(reply))
            self._ensure_thread()
            self._cond.notify_all()

    def live_count(self) -> int:
        with self._cond:
            return len(self._live)

    # The thread --------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
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
                wake = min((f.not_before for f in self._finals), default=now + self._tick())
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
                finals = [f for f in self._finals if f.not_before <= now]
                self._finals = [f for f in self._finals if f.not_before > now]
                live = list(self._live.values())
            writes = [self._write(final.reply, final.reply.ending) for final in finals]
            checkpoints = self._due(live, now, everything)
            for entry, progress in checkpoints:
                renewal = progress is None
                writes.append(self._write(entry.reply, None, renewal))
            if not writes:
                return 0
            with ExitStack() as spans:
                # Each final write shows in its own reply's trace, though many share an RPC.
                traced = [
                    spans.enter_context(self._final_span(final.reply, len(writes)))
                    for final in finals
                ]
                outcomes = self.store.write_replies(writes)
                for span, outcome in zip(traced, outcomes, strict=False):
                    span.set({"workshop_chat.outcome": outcome.value})
            self.batches += 1
            for final, outcome in zip(finals, outcomes, strict=False):
                self._after_final(final, outcome)
            for (entry, progress), outcome in zip(
                checkpoints, outcomes[len(finals) :], strict=True
            ):
                self._after_checkpoint(entry, progress, outcome, now)
            return len(checkpoints)

    def _final_span(self, reply: Reply, batch: int) -> AbstractContextManager[Span]:
        attributes: Attributes = {
            "db.system.name": "firestore",
            "db.operation.name": "final write",
            "db.operation.batch.size": batch,
            "workshop_chat.reply.id": reply.id,
        }
        name = "firestore final write"
        return self.telemetry.span(name, attributes, kind="client", parent=reply.trace)

    @staticmethod
    def _write(reply: Reply, ending: Ending | None, renewal: bool = False) -> ReplyWrite:
        assert reply.claim is not None  # only claimed replies are tracked or finished here
        if renewal:
            return ReplyWrite(reply.claim, None)
        return ReplyWrite(reply.claim, reply.content(), ending)

    def _due(self, live: list[_Live], now: float, everything: bool) -> list[_Due]:
        due: list[_Due] = []
        for entry in live:
            if entry.reply.ending is not None:
                continue
            age = now - entry.last_write
            progress = entry.reply.progress()
            slack = self._tick() / 2  # a write due just after this tick goes out now
            if progress != entry.stored_progress and (
                everything or age + slack >= self.cadence.checkpoint_seconds
            ):
                due.append((entry, progress))
            elif age + slack >= self.renew_seconds:
                due.append((entry, None))  # silent model (thinking): renew the lease only
        return due

    def _after_checkpoint(
        self, entry: _Live, progress: int | None, outcome: WriteOutcome, now: float
    ) -> None:
        if outcome is WriteOutcome.WROTE:
            entry.last_write = now
            if progress is not None:
                entry.stored_progress = progress
        elif outcome is WriteOutcome.LOST:
            with self._cond:
                self._live.pop(id(entry.reply), None)
            entry.reply.end(Ending("error", "error"), write=False)
        elif outcome is WriteOutcome.STOP:
            entry.reply.stop()  # asked on another instance: the final write goes out next
        # UNSTORED: skipped; the next tick tries again with the text it has then.

    def _after_final(self, final: _Final, outcome: WriteOutcome) -> None:
        if outcome is not WriteOutcome.UNSTORED:
            final.reply.settled(outcome)
            return
        final.attempts += 1
        if final.attempts >= self.cadence.final_attempts:
            log.error(
                "reply could not be stored",
                extra={"fields": {"replyId": final.reply.id, "replyBytes": final.reply.size}},
            )
            final.reply.settled(WriteOutcome.UNSTORED)
            return
        final.not_before = time.monotonic() + 0.25 * 2 ** (final.attempts - 1)
        with self._cond:
            self._finals.append(final)
