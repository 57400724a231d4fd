"""The turn and reply lifecycle with no processes: an in-memory store and a scripted model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.fakes import MemoryStore, ScriptedModel
from workshop_chat.chat.checkpoints import Cadence, Checkpointer
from workshop_chat.chat.domain import Event, Turn, UserMessage
from workshop_chat.chat.outcomes import Workshop
from workshop_chat.chat.reply import Limits
from workshop_chat.chat.sessions import SessionOps
from workshop_chat.chat.turns import Chat, Settings, Stores


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def make_chat(store: MemoryStore, model: ScriptedModel) -> Callable[..., Chat]:
    def make(limits: Limits | None = None, **settings: Any) -> Chat:
        # Checkpoints and lease renewals happen when a test flushes, never on their own.
        checkpointer = Checkpointer(store, Cadence(3600.0, 36_000.0, final_attempts=3))
        options = {"keepalive_seconds": 5.0, "follow_seconds": 0.01, **settings}
        return Chat(
            Stores(store, store),  # one fake: conversations and (unused) sessions
            model,
            Workshop(lambda step: f"prompt for {step}"),
            checkpointer,
            Settings(limits=limits or Limits(), **options),
            clock=lambda: store.now,
        )

    return make


@pytest.fixture
def chat(make_chat: Callable[..., Chat]) -> Chat:
    return make_chat()


@pytest.fixture
def ops(chat: Chat, store: MemoryStore) -> SessionOps:
    return SessionOps(chat, Stores(store, store))


def turn(text: str = "Hello", mid: str = "m1", **extra: Any) -> Turn:
    return Turn("s1", "define", UserMessage(mid, text), **extra)


class Listener:
    """Runs a turn in a thread, as a request thread would, and keeps what it was sent."""

    def __init__(self, chat: Chat, the_turn: Turn, uid: str = "alice") -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(chat, the_turn, uid))
        self._thread.start()

    def _run(self, chat: Chat, the_turn: Turn, uid: str) -> None:
        try:
            for event in chat.run(the_turn, uid):
                self.events.append(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self) -> list[Event]:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the stream did not end"
        if self.error is not None:
            raise self.error
        return self.events


def texts(events: list[Event]) -> str:
    from workshop_chat.chat.domain import TextDelta

    return "".join(e.text for e in events if isinstance(e, TextDelta))


def ends(events: list[Event]) -> list[Event]:
    from workshop_chat.chat.domain import Failed, Finished

    return [e for e in events if isinstance(e, Finished | Failed)]


def drain(events: Iterator[Event]) -> list[Event]:
    return list(events)
