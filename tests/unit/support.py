"""What the unit tests share: a turn to send, a listener that runs it as a request thread
would, and readers of the events it got."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from workshop_chat.chat.domain import Event, Turn, UserMessage
from workshop_chat.chat.generation import Limits
from workshop_chat.chat.turns import Turns
from workshop_chat.config import Config

DEFAULTS = Config.from_env({"GOOGLE_CLOUD_PROJECT": "demo-unit", "GEMINI_API_KEY": "k"})


def limits(**changes: Any) -> Limits:
    """The configured limits of a reply, with these changed."""
    values = {
        "stall_seconds": DEFAULTS.stall_seconds,
        "reply_timeout_seconds": DEFAULTS.reply_timeout_seconds,
        "max_reply_bytes": DEFAULTS.max_reply_bytes,
        "max_tool_rounds": DEFAULTS.max_tool_rounds,
    }
    return Limits(**{**values, **changes})


def turn(text: str = "Hello", mid: str = "m1", **extra: Any) -> Turn:
    return Turn("s1", "define", UserMessage(mid, text), **extra)


class Listener:
    """Runs a turn in a thread, as a request thread would, and keeps what it was sent."""

    def __init__(self, chat: Turns, the_turn: Turn, uid: str = "alice") -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(chat, the_turn, uid))
        self._thread.start()

    def _run(self, chat: Turns, the_turn: Turn, uid: str) -> None:
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
