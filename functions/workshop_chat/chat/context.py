"""What the model is asked in a turn: the step's stored conversation, newest kept within the
history budget, then the new message. Its system instruction is `outcomes.Workshop`'s."""

from __future__ import annotations

from .domain import FileRef, Message, UserMessage

Contents = list[tuple[str, str]]  # (role, text): "user" or "model"
ContentFiles = list[tuple[FileRef, ...]]  # the files of each of `Contents`


def model_contents(
    messages: list[Message], user: UserMessage, max_chars: int
) -> tuple[Contents, ContentFiles]:
    """Stored history before the user message, newest kept within `max_chars`; and the files
    of each of those contents."""
    history: list[tuple[str, str, tuple[FileRef, ...]]] = []
    for message in messages:
        if message.id == user.id:
            break
        if message.role == "user" and (message.text.strip() or message.files):
            history.append(("user", message.text, message.files))
        elif (
            message.role == "assistant"
            and message.text.strip()
            and message.status in ("complete", "streaming", "stopped")
            and message.finish_reason != "content-filter"
        ):
            history.append(("model", message.text, ()))
    budget = max_chars - len(user.text)
    kept: list[tuple[str, str, tuple[FileRef, ...]]] = []
    for item in reversed(history):
        budget -= len(item[1])
        if budget < 0:
            break
        kept.append(item)
    kept.reverse()
    while kept and kept[0][0] != "user":
        kept.pop(0)
    kept.append(("user", user.text, user.files))
    return [(role, text) for role, text, _ in kept], [files for _, _, files in kept]
