"""System prompts, one text file per design-thinking step, so facilitators edit prose, not code."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_DIR = Path(__file__).parent / "prompts"
STEPS = ("empathize", "define", "ideate", "prototype", "test")


@cache
def _read(name: str) -> str:
    return (_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def system_prompt(step_id: str) -> str:
    """The step's own prompt after the shared one; any other step gets the generic prompt."""
    step = step_id.lower()
    own = _read(step) if step in STEPS else _read("generic-step")
    return f"{_read('base')}\n\n{own}"
