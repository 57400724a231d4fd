"""Data blocks at the head of a turn's first content: what the team wrote (earlier steps'
notes, the board) reaches the model between delimiters, as quoted data, never as instructions.
"""

from __future__ import annotations

import json
from typing import Any


def data_block(
    opening: str, closing: str, records: list[dict[str, Any]], budget: int
) -> str | None:
    """One JSON object a record between `opening` and `closing`, the last records kept first
    within `budget` characters; `<` `>` are escaped so that no record can close the block and
    speak for itself. None when not one record fits."""
    room = budget - len(opening) - len(closing) - 2
    lines: list[str] = []
    for record in reversed(records):
        line = (
            json.dumps(record, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
        )
        if len(line) + 1 > room:
            break
        lines.insert(0, line)
        room -= len(line) + 1
    if not lines:
        return None
    return "\n".join([opening, *lines, closing])
