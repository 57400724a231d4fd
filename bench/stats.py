"""Percentiles and formatting shared by the benchmark's parts."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100): the value below which p % of samples fall."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, padded so it also reads well in a terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
