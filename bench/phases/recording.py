"""What the stand-in recorded during a round, traced back to the turns that caused it.

Every request that reaches the stand-in is recorded with its path, body, headers and arrival
time (`at`, time.monotonic() on this machine, the clock the client stamps its sends with):

- streamed chat calls (`:streamGenerateContent`): ours (google-genai, API `v1`), the
  predecessor's (@ai-sdk/google, `v1beta`), or the benchmark's own direct requests (marked with
  a header); each names its turn in the last user message (`turn <id>:`);
- summary calls (`:generateContent`, not streamed): ours only; the transcript they quote names
  the turns, and so the conversations, they summarize.
"""

from __future__ import annotations

from typing import Any

from .conversation import DIRECT_HEADER, TAG, turn_of

SIDES = ("ours", "predecessor")
MAX_RECORDED = 10_000  # standin/gemini_standin.py keeps no more: older records are dropped


def _header(record: dict[str, Any], name: str) -> str | None:
    lower = name.lower()
    for key, value in (record.get("headers") or {}).items():
        if key.lower() == lower:
            return str(value)
    return None


def _texts(content: Any) -> list[str]:
    """The text parts of one content (or a systemInstruction)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, dict):
        return []
    return [p["text"] for p in content.get("parts") or [] if isinstance(p.get("text"), str)]


def input_chars(body: Any) -> int:
    """Characters of text a request sends the model: its contents and system instruction."""
    if not isinstance(body, dict):
        return 0
    contents = body.get("contents") or []
    if isinstance(contents, dict | str):
        contents = [contents]
    chars = sum(len(t) for c in contents for t in _texts(c))
    system = body.get("systemInstruction") or body.get("system_instruction")
    return chars + sum(len(t) for t in _texts(system))


def _shape(body: Any) -> list[tuple[str, str]]:
    """(role, text) of each content: what must match between a server's call and the direct."""
    contents = body.get("contents") if isinstance(body, dict) else None
    return [(c.get("role", ""), "".join(_texts(c))) for c in contents or [] if isinstance(c, dict)]


def _last_user_turn(body: Any) -> str | None:
    users = [c for c in (body.get("contents") or []) if c.get("role", "user") == "user"]
    return turn_of("".join(_texts(users[-1]))) if users else None


def _side(record: dict[str, Any]) -> str:
    direct = _header(record, DIRECT_HEADER)
    if direct:
        return f"direct-{direct}"
    return "predecessor" if "/v1beta/" in record.get("path", "") else "ours"


def trace(records: list[dict[str, Any]], turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds to each turn row its model calls (count, cancelled, lead times); returns the
    round's totals, its summary calls and the calls that named no turn of this round."""
    rows = {row["id"]: row for row in turns}
    streamed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    summaries: list[dict[str, Any]] = []
    strays = {side: 0 for side in SIDES}
    for record in records:
        path, body = record.get("path", ""), record.get("body")
        if ":streamGenerateContent" in path and isinstance(body, dict):
            side, turn = _side(record), _last_user_turn(body)
            if turn in rows:
                streamed.setdefault((turn, side), []).append(record)
            elif side in strays:
                strays[side] += 1
        elif ":generateContent" in path:
            text = "\n".join(t for c in (body or {}).get("contents") or [] for t in _texts(c))
            summaries.append(
                {
                    "at": record.get("at"),
                    "chars": input_chars(body),
                    "conversations": sorted({int(m.group(2)) for m in TAG.finditer(text)}),
                }
            )
    mismatches = 0
    for turn_id, row in rows.items():
        for side in SIDES:
            calls = sorted(streamed.get((turn_id, side), []), key=lambda r: r.get("at", 0))
            _note_calls(row, side, calls)
        ours = streamed.get((turn_id, "ours"), [])
        direct = streamed.get((turn_id, "direct-ours"), [])
        answered = [r for r in ours if r.get("ended") == "complete"] or ours
        if answered and direct and _shape(answered[-1]["body"]) != _shape(direct[0]["body"]):
            mismatches += 1
    return {
        "summaries": summaries,
        "strays": strays,
        "contentsMismatches": mismatches,
        "recorded": len(records),
        "recordingFull": len(records) >= MAX_RECORDED,
    }


def _note_calls(row: dict[str, Any], side: str, calls: list[dict[str, Any]]) -> None:
    """Calls per turn, and the lead time: model request arrival minus the client's send.

    The lead is taken to the call that answered (the last one that completed): a call that was
    cancelled and made again sent nothing the client saw.
    """
    sent = (row.get(side) or {}).get("sent")
    completed = [r for r in calls if r.get("ended") == "complete"]
    row[f"{side}Calls"] = len(calls)
    row[f"{side}Cancelled"] = sum(1 for r in calls if r.get("ended") == "client-closed")
    if sent is None or not calls:
        return
    answered = completed[-1] if completed else calls[-1]
    row[f"{side}Lead"] = answered["at"] - sent
    row[f"{side}FirstLead"] = calls[0]["at"] - sent
