"""A turn's trace, drawn for a person: `OTEL_TRACES_EXPORTER=console` prints one span a line
(JSON) among the function's log lines; this groups them by trace and draws each as a
waterfall of its spans, by start time, with what an operator looks at first (the claim's
outcome, the model's tokens and first token, a tool's name, a status).

`./dev.sh --traces` shows each request's trace as it ends; `python -m stack traces [LOG]` draws
those in a log already written; `docs/operations.md`'s picture is `html()` of a real turn.
"""

from __future__ import annotations

import html as escape
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

Span = dict[str, Any]
WIDTH = 32  # characters of bar


def spans_in(lines: Iterable[str]) -> list[Span]:
    """The spans among the lines: JSON objects with a context and a kind."""
    found = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "context" in value and "kind" in value:
            found.append(value)
    return found


def by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span["context"]["trace_id"], []).append(span)
    return traces


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _note(span: Span) -> str:
    """What is worth reading of a span, besides its name and time."""
    a = span.get("attributes") or {}
    bits = []
    if "http.response.status_code" in a:
        bits.append(str(a["http.response.status_code"]))
    if "workshop_chat.claim" in a:
        bits.append(f"claim {a['workshop_chat.claim']} ({a.get('workshop_chat.mode', '')})")
    if "gen_ai.usage.input_tokens" in a:
        bits.append(f"{a['gen_ai.usage.input_tokens']} in / {a['gen_ai.usage.output_tokens']} out")
    for event in span.get("events") or []:
        if event.get("name") == "first_token":
            seconds = (event.get("attributes") or {}).get("workshop_chat.seconds", 0)
            bits.append(f"first token {seconds * 1000:.0f} ms")
    if "gen_ai.response.finish_reasons" in a:
        bits.append("finish " + ",".join(a["gen_ai.response.finish_reasons"]))
    if "workshop_chat.outcome" in a:
        bits.append(str(a["workshop_chat.outcome"]))
    if "error.type" in a:
        bits.append(f"error {a['error.type']}")
    if span.get("links"):
        bits.append("linked to " + span["links"][0]["context"]["trace_id"][2:10])
    return ", ".join(bits)


def rows(spans: list[Span]) -> tuple[float, float, list[tuple[int, float, float, Span]]]:
    """(start, end, [(depth, offset s, length s, span)]), parents before their children."""
    ordered = sorted(spans, key=lambda s: _time(s["start_time"]))
    start = min(_time(s["start_time"]) for s in ordered)
    end = max(_time(s["end_time"]) for s in ordered)
    ids = {s["context"]["span_id"]: s for s in ordered}

    def depth(span: Span) -> int:
        n, parent = 0, span.get("parent_id")
        while parent in ids and n < 10:
            n, parent = n + 1, ids[parent].get("parent_id")
        return n

    drawn = [
        (depth(s), _time(s["start_time"]) - start, _time(s["end_time"]) - _time(s["start_time"]), s)
        for s in ordered
    ]
    return start, end, drawn


def waterfall(spans: list[Span]) -> str:
    """One trace as text: a line a span, its bar placed in the trace's time."""
    start, end, drawn = rows(spans)
    total = max(end - start, 1e-6)
    trace_id = spans[0]["context"]["trace_id"][2:]
    lines = [f"trace {trace_id}  {total * 1000:.0f} ms"]
    for depth, offset, length, span in drawn:
        left = int(offset / total * WIDTH)
        size = max(1, round(length / total * WIDTH))
        bar = " " * left + "█" * min(size, WIDTH - left)
        name = "  " * depth + span["name"]
        lines.append(
            f"  {offset * 1000:7.0f} ms {bar:<{WIDTH}} {length * 1000:7.0f} ms  {name:<40} "
            f"{_note(span)}".rstrip()
        )
    return "\n".join(lines)


def html(traces: list[list[Span]]) -> str:
    """The traces as a page (docs/operations.md's picture is a screenshot of it)."""
    parts = []
    for spans in traces:
        start, end, drawn = rows(spans)
        total = max(end - start, 1e-6)
        trace_id = spans[0]["context"]["trace_id"][2:]
        body = []
        for depth, offset, length, span in drawn:
            left, width = offset / total * 100, max(length / total * 100, 0.4)
            body.append(
                f"<tr><td style='padding-left:{depth * 16 + 4}px'>{escape.escape(span['name'])}"
                f"</td><td><div class=track><div style='left:{left:.2f}%;width:{width:.2f}%'>"
                f"</div></div></td><td class=ms>{length * 1000:.0f} ms</td>"
                f"<td class=note>{escape.escape(_note(span))}</td></tr>"
            )
        parts.append(
            f"<h2>trace {trace_id} <small>{total * 1000:.0f} ms</small></h2>"
            f"<table>{''.join(body)}</table>"
        )
    style = (
        "body{font:13px system-ui,sans-serif;margin:16px;color:#1d2733}"
        "h2{font-size:14px;margin:18px 0 6px}small{color:#667}"
        "table{border-collapse:collapse;width:100%}td{padding:3px 4px;white-space:nowrap}"
        "tr:nth-child(odd){background:#f4f7fb}"
        ".track{position:relative;width:480px;height:12px}"
        ".track div{position:absolute;top:0;height:12px;background:#3f7fd0;border-radius:2px}"
        "td.ms{text-align:right;color:#334}td.note{color:#556}"
    )
    return f"<!doctype html><meta charset=utf-8><style>{style}</style>{''.join(parts)}"
