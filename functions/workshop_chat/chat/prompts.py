"""System prompts, one text file per design-thinking step, so facilitators edit prose, not code.

A step's file may start with settings between two `---` lines, one `key: value` a line:

    ---
    thinking_budget: 0
    ---
    This is the Ideate step. ...

`thinking_budget` overrides GEMINI_THINKING_BUDGET for that step (-1: the model decides, 0: no
thinking where the model allows it, N: at most N thinking tokens). `tools` narrows the board's
tools the step declares (`tools: add_board_items, update_board_item`; empty: none). Nothing else
is read there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .board import TOOL_NAMES, ToolName

_DIR = Path(__file__).parent / "prompts"
STEPS = ("empathize", "define", "ideate", "prototype", "test")
_SETTINGS = ("thinking_budget", "tools")


@dataclass(frozen=True)
class StepPrompt:
    text: str
    thinking_budget: int | None = None
    tools: tuple[ToolName, ...] | None = None  # None: every tool


class PromptError(ValueError):
    """A prompt file whose settings cannot be read: the function refuses to start."""


def parse(name: str, raw: str) -> StepPrompt:
    text = raw.strip()
    if not text.startswith("---\n"):
        return StepPrompt(text)
    head, sep, body = text[4:].partition("\n---")
    if not sep:
        raise PromptError(f"prompts/{name}.md: the settings block has no closing ---")
    settings: dict[str, int] = {}
    tools: tuple[ToolName, ...] | None = None
    for line in head.splitlines():
        key, colon, value = (part.strip() for part in line.partition(":"))
        if not line.strip():
            continue
        if not colon or key not in _SETTINGS:
            raise PromptError(f"prompts/{name}.md: unknown setting {line.strip()!r}")
        if key == "tools":
            tools = _tools(name, value)
            continue
        try:
            number = int(value)
        except ValueError:
            raise PromptError(f"prompts/{name}.md: {key} must be a whole number") from None
        if not -1 <= number <= 32_768:
            raise PromptError(f"prompts/{name}.md: {key} must be between -1 and 32768")
        settings[key] = number
    return StepPrompt(body.strip(), settings.get("thinking_budget"), tools)


def _tools(name: str, value: str) -> tuple[ToolName, ...]:
    named = [n.strip() for n in value.split(",") if n.strip()]
    found = tuple(n for n in TOOL_NAMES if n in named)
    if len(found) != len(set(named)):
        unknown = sorted(set(named) - set(found))
        raise PromptError(f"prompts/{name}.md: unknown tools {', '.join(unknown)}")
    return found


@cache
def _read(name: str) -> StepPrompt:
    return parse(name, (_DIR / f"{name}.md").read_text(encoding="utf-8"))


def _own(step_id: str) -> StepPrompt:
    step = step_id.lower()
    return _read(step) if step in STEPS else _read("generic-step")


def system_prompt(step_id: str) -> str:
    """The step's own prompt after the shared one; any other step gets the generic prompt."""
    return f"{_read('base').text}\n\n{_own(step_id).text}"


def thinking_budget(step_id: str) -> int | None:
    """The step's own thinking budget, or None for the configured one."""
    return _own(step_id).thinking_budget


def tools(step_id: str) -> tuple[ToolName, ...] | None:
    """The board tools the step declares, or None for all of them."""
    return _own(step_id).tools


def check_all() -> None:
    """Read every prompt file once at start-up, so a bad settings block stops the start."""
    for name in ("base", "generic-step", *STEPS):
        _read(name)
