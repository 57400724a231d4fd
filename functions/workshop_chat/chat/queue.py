"""Turns in order: one reply generates in a step at a time.

A message sent while another reply in its step is generated is stored at once, with a reply
that waits (`queued`). Whether the step is busy is decided on the session head that every claim
is made under (`Conversations.begin`), so two instances never both start a reply; the order is
the store's, the order the history shows. The process that stored a waiting reply keeps its
lease and watches the step; when every reply before it has settled, it claims the reply
(`start`) and generates it with everything stored before it in context. The sender's request
only listens: if it goes, the reply is still made. If that process dies, the lease lapses and
the next request to find the reply (a later turn, a follower, the reply behind it) adopts it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .domain import (
    REPLACED_TEXT,
    UNSETTLED,
    Content,
    Ending,
    Event,
    Failed,
    KeepAlive,
    Message,
    Waiting,
)
from .errors import ChatError, StoreUnavailable
from .ports import Claim, Conversations, ReplyStore, ReplyWrite, WriteOutcome
from .reply import Reply
from .telemetry import QUIET, Telemetry

log = logging.getLogger("workshop_chat.chat.queue")

# Where a waiting reply went: generated here (its `Reply`), or elsewhere (its stored state, to
# follow or replay), or nowhere (None: deleted with an edit or its session).
Went = Reply | Message | None


def ahead_of(pending: list[Message], reply_id: str) -> list[Message] | None:
    """The step's replies a waiting reply must let settle first: every one stored before it
    that is generating or waiting (a generation whose instance died holds nobody up; a waiting
    reply whose instance died is adopted). None: the reply is not among `pending`."""
    mine = next((m for m in pending if m.id == reply_id), None)
    if mine is None:
        return None
    return [
        m
        for m in pending
        if (m.created_at, m.id) < (mine.created_at, mine.id)  # a tie is broken, not shared
        and not (m.status == "streaming" and m.lapsed)
    ]


def busy(messages: list[Message], but: str = "") -> list[Message]:
    """The step's replies, other than `but`, generating or waiting as of a look (whose
    instance is alive: the others hold nobody up)."""
    return [
        m
        for m in messages
        if m.role == "assistant" and m.id != but and m.status in UNSETTLED and not m.lapsed
    ]


def orphaned(message: Message) -> bool:
    """A reply stored to wait its turn whose instance died: the next turn adopts it."""
    return message.status == "queued" and message.lapsed


@dataclass(frozen=True)
class Ports:
    """What a waiting reply does through its `line.Line`: read the step's pending replies,
    renew or end its claim, adopt a reply ahead whose instance died, start itself (the
    `Reply`, or None when the claim was not made), and read its stored state."""

    store: Conversations
    writer: ReplyStore
    adopt: Callable[[Message], None]
    start: Callable[[Message], Reply | None]
    telemetry: Telemetry = QUIET


class Waiter:
    """One waiting reply held by this process, from its claim until it starts or ends."""

    def __init__(
        self,
        key: tuple[str, str],
        reply_id: str,
        claim: Claim,
        ports: Ports,
        every: float,
        lease_seconds: float,
    ) -> None:
        self.key = key
        self.reply_id = reply_id
        self.claim = claim
        self.ports = ports
        self.every = every
        self.renew_every = lease_seconds / 4
        self.ahead = 0
        self.went: Went = None
        self.done = False
        self._cond = threading.Condition()

    def begin(self, ahead: int) -> None:
        """Waits in a thread of its own, in the context of the request that stored it (its
        trace goes on there)."""
        self.ahead = ahead
        context = contextvars.copy_context()
        name = f"queue {self.reply_id}"
        threading.Thread(target=context.run, args=(self._run,), name=name, daemon=True).start()

    def listen(
        self, keepalive: float, follow: Callable[[Message], Iterator[Event]]
    ) -> Iterator[Event]:
        """Word that the reply waits (again whenever the line ahead shortens), pings, then the
        reply's own events once its turn came: live from here, or followed from the store."""
        told = -1
        while True:
            with self._cond:
                if not self.done and self.ahead == told:
                    self._cond.wait(keepalive)
                done, ahead, went = self.done, self.ahead, self.went
            if done:
                break
            if ahead != told:
                told = ahead
                yield Waiting(self.reply_id, ahead)
            else:
                yield KeepAlive()
        if isinstance(went, Reply):
            yield from went.listen(keepalive)
        elif isinstance(went, Message):
            yield from follow(went)
        else:
            yield Failed(REPLACED_TEXT, cause="replaced")

    # The wait, in its own thread ---------------------------------------------------------

    def _run(self) -> None:
        went: Went = None
        try:
            went = self._wait()
        except Exception:  # never silently: the lease lapses and another process adopts it
            log.exception("a waiting reply stopped waiting")
            went = self._stored()
        finally:
            with self._cond:
                self.went, self.done = went, True
                self._cond.notify_all()

    def _wait(self) -> Went:
        began = renewed = time.monotonic()
        while True:
            time.sleep(self.every)
            try:
                pending = self.ports.store.pending(*self.key)
            except StoreUnavailable:
                continue  # the lease outlasts a short outage; a long one lets it lapse
            ahead = ahead_of(pending, self.reply_id)
            if ahead is None:
                return self._stored()  # started or ended elsewhere, or deleted
            try:
                for other in ahead:
                    if orphaned(other):
                        self.ports.adopt(other)
                reply = None
                if ahead:
                    self._tell(len(ahead))
                else:
                    reply = self.ports.start(next(m for m in pending if m.id == self.reply_id))
            except ChatError:  # its sender may no longer write in the session
                return self._stop()
            except StoreUnavailable:
                continue  # looked at again next time
            if reply is not None:
                self.ports.telemetry.waited(self.key[1], time.monotonic() - began)
                return reply
            if not ahead or time.monotonic() - renewed >= self.renew_every:
                renewed = time.monotonic()
                outcome = self.ports.writer.write_replies([ReplyWrite(self.claim, None)])[0]
                if outcome is WriteOutcome.STOP:
                    return self._stop()
                if outcome is WriteOutcome.LOST:
                    return self._stored()

    def _tell(self, ahead: int) -> None:
        with self._cond:
            if ahead != self.ahead:
                self.ahead = ahead
                self._cond.notify_all()

    def _stop(self) -> Went:
        """Stopped before its turn (or its sender left): stored empty, and nothing is asked."""
        ending = Ending("stopped", "stop")
        self.ports.writer.write_replies([ReplyWrite(self.claim, Content(""), ending)])
        return self._stored()

    def _stored(self) -> Went:
        try:
            return self.ports.store.reply(*self.key, self.reply_id)
        except StoreUnavailable:
            return None
