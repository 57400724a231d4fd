"""What the model is asked in a turn: the step's stored conversation, newest kept within the
history budget, then the new message. Its system instruction is `outcomes.Workshop`'s."""

from __future__ import annotations

import re

from .domain import Author, FileRef, Message, ToolCall, UserMessage

Contents = list[tuple[str, str]]  # (role, text): "user" or "model"
ContentFiles = list[tuple[FileRef, ...]]  # the files of each of `Contents`
# The function calls a model content made, or the results a user content gives, by index.
ContentCalls = dict[int, tuple[ToolCall, ...]]
_Item = tuple[str, str, tuple[FileRef, ...], tuple[ToolCall, ...]]
_ANSWERED = ("output-available", "output-error", "output-denied")


def model_contents(
    messages: list[Message], user: UserMessage, max_chars: int, named: bool = False
) -> tuple[Contents, ContentFiles, ContentCalls]:
    """Stored history before the user message, newest kept within `max_chars` (a reply's
    tool calls and results count with their JSON); the files of each of those contents; and
    the calls each made or answered. `named`: each team message opens with its author's
    name, so the facilitator can answer people by name."""
    history: list[list[_Item]] = []
    for message in messages:
        if message.id == user.id:
            break
        if message.role == "user" and (message.text.strip() or message.files):
            text = signed(message.text, message.author) if named else message.text
            history.append([("user", text, message.files, ())])
        elif (
            message.role == "assistant"
            and (message.text.strip() or message.tools)
            and message.status in ("complete", "streaming", "stopped")
            and message.finish_reason != "content-filter"
        ):
            history.append(reply_contents(message))
    text = signed(user.text, user.author) if named else user.text
    budget = max_chars - len(text)
    kept: list[_Item] = []
    for items in reversed(history):
        budget -= sum(len(text) + _weight(calls) for _, text, _, calls in items)
        if budget < 0:
            break
        kept[:0] = items
    while kept and kept[0][0] != "user":
        kept.pop(0)
    kept.append(("user", text, user.files, ()))
    calls = {i: item[3] for i, item in enumerate(kept) if item[3]}
    return [(role, text) for role, text, _, _ in kept], [item[2] for item in kept], calls


def signed(text: str, author: Author | None) -> str:
    """`[Name] text`: the name kept to letters and spaces it can hold, so that it cannot end
    the bracket or start a line of its own."""
    name = " ".join(re.sub(r"[\[\]\r\n<>]", " ", author.name).split()) if author else ""
    return f"[{name}] {text}" if name else text


def reply_contents(message: Message) -> list[_Item]:
    """A reply as Gemini made it: each round's words with its calls, then their results as a
    user content; the last round's words. Calls that never got a result are left out: the
    model cannot be shown a call without its answer (nor an empty content)."""
    answered = [c for c in message.tools if c.state in _ANSWERED]
    items: list[_Item] = []
    said = 0
    for n in sorted({c.round for c in answered}):
        calls = tuple(c for c in answered if c.round == n)
        end = message.steps[n] if n < len(message.steps) else max(c.at for c in calls)
        items.append(("model", message.text[said:end], (), calls))
        items.append(("user", "", (), calls))
        said = end
    if message.text[said:].strip():
        items.append(("model", message.text[said:], (), ()))
    return items


def _weight(calls: tuple[ToolCall, ...]) -> int:
    return sum(len(repr(c.input)) + len(repr(c.output)) + len(c.error_text or "") for c in calls)
