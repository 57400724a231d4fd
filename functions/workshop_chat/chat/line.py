"""What a turn does when its step is busy: it takes its place in the step's line.

A new message is stored at once with a reply that waits (`queue.Waiter` keeps it and starts
it); a regenerate, an edit or an approval's answer waits in its request, then is decided again;
a waiting reply whose instance died is adopted. `turns.Turns` decides when; this is how.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from .domain import (
    Author,
    Event,
    Failed,
    KeepAlive,
    Message,
    NewFile,
    Turn,
    UserMessage,
    Waiting,
    reply_id_for,
)
from .errors import ChatError, RateLimited, StoreUnavailable
from .generations import Generations, check_access, check_quota
from .ports import Claim, Conversation, Moved
from .queue import Ports, Waiter, busy, orphaned
from .reply import Reply

# Relay a reply of the step's from the store (`Turns.follow`), and decide a turn again once
# its wait is over (`Turns.run`).
Follow = Callable[[tuple[str, str], Conversation, UserMessage, Message], Iterator[Event]]
Rerun = Callable[[Turn, str, str | None, str], Iterator[Event]]

STEP_BUSY_RETRY = 10  # seconds: about one reply's time


class Line:
    """The waiting replies this process keeps, for its `Turns`."""

    def __init__(self, generations: Generations, follow: Follow, rerun: Rerun) -> None:
        self.generations = generations
        self.follow = follow
        self.rerun = rerun
        self._waiting: dict[tuple[str, str, str], Waiter] = {}
        self._lock = threading.Lock()

    def waiter(self, slot: tuple[str, str, str]) -> Waiter | None:
        """The wait this process keeps for a reply, while it waits."""
        with self._lock:
            found = self._waiting.get(slot)
        return found if found is not None and not found.done else None

    def enqueue(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        user: UserMessage,
        new: tuple[NewFile, ...],
        uploaded: list[str],
        trace: str | None,
    ) -> Iterator[Event] | None:
        """The step is busy: the message is stored now, in arrival order, with a reply that
        waits its turn here. Nothing is asked of the model until then."""
        gens = self.generations
        ahead = busy(conversation.messages)
        if sum(m.status == "queued" for m in ahead) >= gens.settings.max_queued:
            raise RateLimited(
                "step_busy", "too many messages wait in this step; wait a moment", STEP_BUSY_RETRY
            )
        check_quota(conversation, gens.clock(), gens.settings.session_rate_limit_per_minute)
        for other in conversation.messages:
            if orphaned(other):
                self.adopt(key, conversation, other)
        if new:  # named by the stored message: uploaded first
            user = replace(user, files=gens.store_files(key, user.id, new, uploaded))
        reply_id = reply_id_for(user.id)
        # After every reply it waits for, whatever this instance's clock says: the order the
        # history shows is the order of the turns.
        last = max((m.created_at for m in conversation.messages), default=0.0)
        now = max(gens.clock(), last + 0.002)
        claim = gens.begin(conversation, user, reply_id, "queue", now, None)
        if claim is None or isinstance(claim, Moved):
            return None  # a twin won, or the step moved: decided again on what is stored now
        waiter = self._hold(key, reply_id, claim, conversation.uid, trace, len(ahead))
        return self.listen(key, conversation, user, waiter)

    def adopt(
        self, key: tuple[str, str], conversation: Conversation, seen: Message
    ) -> Waiter | None:
        """A waiting reply whose instance died: this process waits for it instead."""
        asked = conversation.get(seen.reply_to or "")
        if asked is None:
            return None
        user = UserMessage(asked.id, asked.text, asked.files, asked.author)
        gens = self.generations
        claim = gens.begin(conversation, user, seen.id, "queue", gens.clock(), seen)
        if claim is None or isinstance(claim, Moved):
            return None  # adopted by another process first
        return self._hold(key, seen.id, claim, conversation.uid, None, 0)

    def listen(
        self, key: tuple[str, str], conversation: Conversation, user: UserMessage, waiter: Waiter
    ) -> Iterator[Event]:
        def follow(stored: Message) -> Iterator[Event]:
            return self.follow(key, conversation, user, stored)

        return waiter.listen(self.generations.settings.keepalive_seconds, follow)

    def later(
        self,
        turn: Turn,
        author: Author,
        trace: str | None,
        conversation: Conversation,
        reply_id: str,
    ) -> Iterator[Event] | None:
        """A regenerate, an edit or an approval's answer while other replies in the step
        generate or wait: the request waits until they settle (nothing is stored meanwhile,
        so a sender who goes takes the request with them), then the turn is decided again.
        None: the step is free."""
        ahead = len(busy(conversation.messages, but=reply_id))
        if not ahead:
            return None
        return self._wait_then_run(turn, author, trace, reply_id, ahead)

    # What a wait runs ----------------------------------------------------------------

    def _hold(
        self,
        key: tuple[str, str],
        reply_id: str,
        claim: Claim,
        uid: str,
        trace: str | None,
        ahead: int,
    ) -> Waiter:
        """This process keeps the waiting reply's lease and starts it when its turn comes."""
        gens = self.generations

        def adopt(seen: Message) -> None:
            self.adopt(key, gens.store.open(key[0], key[1], uid), seen)

        def start(seen: Message) -> Reply | None:
            return self._start(key, uid, seen, trace)

        ports = Ports(gens.store, gens.checkpointer.store, adopt, start, gens.telemetry)
        every, lease = gens.settings.follow_seconds, gens.settings.lease_seconds
        waiter = Waiter(key, reply_id, claim, ports, every, lease)
        with self._lock:
            self._waiting = {k: w for k, w in self._waiting.items() if not w.done}
            self._waiting[(*key, reply_id)] = waiter
        waiter.begin(ahead)
        return waiter

    def _start(
        self, key: tuple[str, str], uid: str, seen: Message, trace: str | None
    ) -> Reply | None:
        """Its turn came: claimed and generated with everything stored before it. A sender
        who has left the session since gets no reply (`queue.Waiter` stops it)."""
        gens = self.generations
        conversation = gens.store.open(key[0], key[1], uid)
        check_access(conversation, write=True)
        asked = conversation.get(seen.reply_to or "")
        if asked is None:
            return None
        user = UserMessage(asked.id, asked.text, asked.files, asked.author)
        if gens.generate(key, conversation, user, "start", trace, seen) is None:
            return None
        return gens.active((*key, seen.id))

    def _wait_then_run(
        self, turn: Turn, author: Author, trace: str | None, reply_id: str, ahead: int
    ) -> Iterator[Event]:
        store, settings = self.generations.store, self.generations.settings
        key = (turn.session_id, turn.step_id)
        yield Waiting(reply_id, ahead)
        pinged = time.monotonic()
        while ahead:
            time.sleep(settings.follow_seconds)
            try:
                now_ahead = len(busy(store.pending(*key), but=reply_id))
            except StoreUnavailable:
                now_ahead = ahead
            if now_ahead != ahead and now_ahead:
                yield Waiting(reply_id, now_ahead)
            elif time.monotonic() - pinged >= settings.keepalive_seconds:
                pinged = time.monotonic()
                yield KeepAlive()
            ahead = now_ahead
        try:
            events = self.rerun(turn, author.uid, trace, author.name)
        except ChatError as error:
            yield Failed(error.message)
            return
        yield from events
