"""Running the board's tools for one reply: the model's arguments checked (`board.py`), the
store written, and the result (or the reason it failed) made the call's output.

A tool never raises into the round loop: whatever goes wrong becomes an error result the
model reads and the stream shows. Only the store being down is told apart, and only in the
text: nothing of the store's own error reaches the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .board import (
    TOOLS,
    BoardError,
    BoardItem,
    ToolSpec,
    board_block,
    check_added,
    check_removed,
    check_updated,
    in_workshop_order,
    item_id_for,
)
from .domain import ToolCall
from .errors import NotFound, StoreUnavailable
from .outcomes import workshop_place
from .ports import Board, Conversation
from .telemetry import QUIET, Telemetry

log = logging.getLogger("workshop_chat.chat.tools")

MAX_INPUT_CHARS = 32_000  # what a call's arguments may weigh, as JSON-ish text


@dataclass(frozen=True)
class Toolbox:
    """The tools one reply may call, bound to where it runs."""

    board: Board
    session_id: str
    step_id: str
    reply_id: str
    clock: Callable[[], float]
    specs: tuple[ToolSpec, ...] = tuple(TOOLS.values())
    telemetry: Telemetry = QUIET

    def run(self, call: ToolCall, epoch: str = "") -> ToolCall:
        """The call with its output, or its error. Blocking: the loop runs it in a thread.
        `epoch` (the claim's) keys the items it adds."""
        if len(repr(call.input)) > MAX_INPUT_CHARS:
            return _failed(call, "the arguments are too large")
        spec = next((s for s in self.specs if s.name == call.name), None)
        if spec is None:
            return _failed(call, f"there is no tool named {call.name[:64]!r}")
        if spec.needs_approval:
            return replace(call, state="approval-requested", approval_id=f"{call.call_id}-ok")
        return self._attempt(call, epoch)

    def decide(
        self, call: ToolCall, approved: bool, reason: str | None, epoch: str = ""
    ) -> ToolCall:
        """The team answered the call's approval request: run it, or tell the model no."""
        call = replace(call, approved=approved, reason=reason)
        if not approved:
            return replace(call, state="output-denied", error_text=reason)
        return self._attempt(call, epoch)

    def _attempt(self, call: ToolCall, epoch: str) -> ToolCall:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.call_id,
            "gen_ai.tool.type": "function",
        }
        with self.telemetry.span(f"execute_tool {call.name}", attributes) as span:
            result = self._outcome(call, epoch)
            if result.state == "output-error":
                span.fail("tool_error")
        return result

    def _outcome(self, call: ToolCall, epoch: str) -> ToolCall:
        try:
            output = self._run(call, epoch)
        except BoardError as error:
            return _failed(call, error.message)
        except NotFound:
            return _failed(call, "there is no board item with that id")
        except StoreUnavailable:
            fields = {"tool": call.name}
            log.warning("board tool could not reach the store", extra={"fields": fields})
            return _failed(call, "the board could not be reached; try again later")
        return replace(call, state="output-available", output=output)

    def _run(self, call: ToolCall, epoch: str) -> dict[str, Any]:
        now = self.clock()
        if call.name == "add_board_items":
            new = check_added(call.input)
            # Numbered within the reply's content: the same for a retry or a takeover of it.
            key = f"{epoch}/{call.call_id}"
            items = [
                BoardItem(
                    item_id_for(self.reply_id, key, n),
                    item.kind,
                    item.title,
                    item.detail,
                    self.step_id,
                    "facilitator",
                    self.reply_id,
                    now,
                    now,
                )
                for n, item in enumerate(new)
            ]
            self.board.add(self.session_id, items)
            return {"ids": [item.id for item in items]}
        if call.name == "update_board_item":
            change = check_updated(call.input)
            item = self.board.change(self.session_id, change, "facilitator", now)
            return {"id": item.id, "version": item.version}
        item_id = check_removed(call.input)
        if not self.board.remove(self.session_id, item_id):
            raise NotFound("not_found", "no such item")
        return {"removed": item_id}


def board_context(
    board: Board | None, session_id: str, conversation: Conversation, room: int
) -> str | None:
    """The session's board as data for a turn, in workshop order, when it has one: read
    again only when it moved since this process last read it."""
    version = conversation.board_version
    if board is None or not version or room <= 0:
        return None
    items = board.items(session_id, version)
    started = {s: o.started_at for s, o in conversation.outcomes.items()}
    steps = sorted(
        {i.step_id for i in items},
        key=lambda s: workshop_place(s, started.get(s, float("inf"))),
    )
    return board_block(in_workshop_order(items, {s: n for n, s in enumerate(steps)}), room)


def _failed(call: ToolCall, text: str) -> ToolCall:
    return replace(call, state="output-error", error_text=text)
