"""What an operator sees of a turn: its spans, and the metrics of its model calls and replies.

The core speaks through this port; `cloud/telemetry.py` fills it with OpenTelemetry when the
standard `OTEL_*` environment asks for an exporter, and `Quiet` (nothing at all, at the cost of a
method call) runs otherwise. Nothing said here may carry message text, file bytes, tokens or
keys: names, ids of our own, counts, durations and statuses only. Metrics are labelled by model
and step, never by user or session: those have no bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

Value = str | int | float | bool | tuple[str, ...]
Attributes = Mapping[str, Value]
Kind = Literal["internal", "client", "server"]


class Headers(Protocol):
    """A request's headers, as far as a trace is read from them."""

    def get(self, key: str) -> str | None: ...


# The GenAI conventions' operation names for what the chat asks Gemini.
Operation = Literal["chat", "generate_content"]


class Span(Protocol):
    def set(self, attributes: Attributes) -> None: ...

    def event(self, name: str, attributes: Attributes | None = None) -> None: ...

    def fail(self, error_type: str) -> None:
        """The span's work failed; `error_type` is one of our own words or a class name."""


class Served(Protocol):
    """A request's server span: current while the request is handled, ended once its body is
    done (a stream ends long after its handler returned)."""

    @property
    def trace_id(self) -> str | None:
        """Its trace, 32 hex digits (None: no telemetry)."""

    def __enter__(self) -> Served: ...

    def __exit__(self, *exc: object) -> None: ...

    def finish(self, status: int, route: str | None) -> None: ...


@dataclass(frozen=True)
class ModelCall:
    """One model call, as metrics count it."""

    operation: Operation
    model: str
    step: str
    seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    first_token_seconds: float | None = None
    error_type: str | None = None


def tokens(usage: Mapping[str, int] | None) -> tuple[int, int]:
    """A call's input and output tokens as the GenAI conventions count them: the model's
    thinking is output."""
    found = usage or {}
    output = found.get("outputTokens", 0) + found.get("reasoningTokens", 0)
    return found.get("inputTokens", 0), output


class Telemetry(Protocol):
    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        kind: Kind = "internal",
        parent: object = None,
        link: object = None,
        root: bool = False,
    ) -> AbstractContextManager[Span]:
        """A span, current while the block runs: a child of `parent` (a `current()` from
        another thread) or of the current span, or of none when `root`; linked to `link`."""

    def serve(self, method: str, headers: Headers) -> Served:
        """The server span of a request, in the trace its headers name."""

    def current(self) -> object:
        """The current span, to parent or link work done later or in another thread."""

    def model_call(self, call: ModelCall) -> None: ...

    def reply_ended(self, model: str, step: str, status: str) -> None: ...

    def waited(self, step: str, seconds: float) -> None:
        """A reply waited this long for its turn in the step."""


class _QuietSpan:
    def set(self, attributes: Attributes) -> None:
        pass

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass


_QUIET_SPAN = _QuietSpan()


class _QuietServed:
    trace_id = None

    def __enter__(self) -> _QuietServed:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def finish(self, status: int, route: str | None) -> None:
        pass


_QUIET_SERVED = _QuietServed()


class Quiet:
    """No telemetry: what runs when no exporter is configured."""

    @contextmanager
    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        kind: Kind = "internal",
        parent: object = None,
        link: object = None,
        root: bool = False,
    ) -> Iterator[Span]:
        yield _QUIET_SPAN

    def serve(self, method: str, headers: Headers) -> Served:
        return _QUIET_SERVED

    def current(self) -> object:
        return None

    def model_call(self, call: ModelCall) -> None:
        pass

    def reply_ended(self, model: str, step: str, status: str) -> None:
        pass

    def waited(self, step: str, seconds: float) -> None:
        pass


QUIET = Quiet()  # the one a part of the core uses when it is handed none
