"""What a reply asks the model: the step's conversation within the history budget, the earlier
steps' outcomes and the board in the room left, the files, the step's system instruction and
thinking budget, and the board's tools. Built before the claim so that the call can leave beside
it; a claim that finds the session moved builds `contents` again to tell whether the call stands.
"""

from __future__ import annotations

from collections.abc import Callable

from .attachments import Attachments
from .board import TOOLS
from .context import ContentCalls, ContentFiles, Contents, model_contents
from .domain import UserMessage
from .generation import Carry, Request
from .outcomes import Workshop
from .ports import Board, Conversation
from .telemetry import Telemetry
from .tools import Toolbox, board_context

Asked = tuple[Contents, ContentFiles, ContentCalls]


def named(conversation: Conversation) -> bool:
    """Whether the model is told who wrote each message: when the session has a team."""
    return bool(conversation.names)


class Asking:
    """Builds a reply's `Request` from a look at its step."""

    def __init__(
        self,
        workshop: Workshop,
        board: Board | None,
        attachments: Attachments | None,
        history_max_chars: int,
        clock: Callable[[], float],
        telemetry: Telemetry,
    ) -> None:
        self.workshop = workshop
        self.board = board
        self.attachments = attachments
        self.history_max_chars = history_max_chars
        self.clock = clock
        self.telemetry = telemetry

    def contents(self, conversation: Conversation, user: UserMessage) -> Asked:
        """The step's own turns and the new message, newest kept within the history budget."""
        messages = conversation.messages
        return model_contents(messages, user, self.history_max_chars, named(conversation))

    def request(
        self,
        key: tuple[str, str],
        conversation: Conversation,
        asked: Asked,
        reply_id: str,
        carry: Carry | None,
    ) -> Request:
        """The step's own turns take precedence; earlier steps' outcomes and the board get
        what room is left, as data ahead of the conversation."""
        contents, files, calls = asked
        room = self.history_max_chars - sum(len(text) for _, text in contents)
        notes = self.workshop.notes(key[1], conversation, room)
        board = board_context(self.board, key[0], conversation, room - len(notes or ""))
        data = "\n\n".join(block for block in (notes, board) if block)
        if data:  # in the first turn's text: Gemini wants turns to alternate
            contents = [(contents[0][0], f"{data}\n\n{contents[0][1]}"), *contents[1:]]
        parts = self.attachments.for_model(files) if self.attachments else {}
        system = self.workshop.system(key[1])
        budget = self.workshop.thinking_budget(key[1])
        toolbox = self._toolbox(key, reply_id)
        return Request(system, contents, budget, parts, calls, toolbox, carry)

    def _toolbox(self, key: tuple[str, str], reply_id: str) -> Toolbox | None:
        """The board's tools, where the deployment keeps a board."""
        if self.board is None:
            return None
        allowed = self.workshop.tool_names(key[1])
        specs = tuple(s for name, s in TOOLS.items() if allowed is None or name in allowed)
        return Toolbox(self.board, key[0], key[1], reply_id, self.clock, specs, self.telemetry)
