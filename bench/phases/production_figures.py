"""The figures of one production round, from its turn rows and the stand-in's recording.

Overhead is taken per turn, against the direct request sent right after it (same contents, same
system prompt), and only then summarized: the pairing cancels the stand-in's own jitter and any
drift in the machine's load over the round.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from ..counts import AFTER
from ..stats import percentile

SIDES = ("ours", "predecessor")
FIRESTORE_KEYS = ("reads", "writes", "rpcs")
# A read of the whole history, where the worker already had this conversation: at least as many
# reads as stored messages, far more than what changed, on a history long enough to tell.
WHOLE_HISTORY_MIN = 6


def firestore_per_turn(turns: list[dict[str, Any]], per_turn: dict[str, dict[str, Any]]) -> None:
    """Adds to each turn of ours its Firestore counts (`firestore`: while its response was open,
    `firestoreAfter`: after it closed, until that worker's next turn), the worker that served it,
    and `changed`: the messages added since that worker last served this conversation (all of
    them if it never did)."""
    last: dict[tuple[str, int], int] = {}
    for row in turns:
        counted = per_turn.get(row["id"])
        if counted is None or not row.get("ours"):
            continue
        after = per_turn.get(f"{row['id']}{AFTER}", {})
        worker = str(counted.get("worker", "?"))
        row["worker"] = worker
        row["firestore"] = {k: counted.get(k, 0) for k in FIRESTORE_KEYS}
        row["firestoreAfter"] = {k: after.get(k, 0) for k in FIRESTORE_KEYS}
        seen = last.get((worker, row["conversation"]))
        # That worker knew every message up to its own turn's reply: 2 * (seen + 1).
        row["changed"] = row["stored"] if seen is None else 2 * (row["turn"] - seen - 1)
        last[(worker, row["conversation"])] = row["turn"]


def _total(row: dict[str, Any], key: str) -> int:
    """A turn's count, whether made while its response was open or after."""
    return row["firestore"][key] + row["firestoreAfter"][key]


def _side(turns: list[dict[str, Any]], side: str) -> dict[str, Any]:
    rows = [r for r in turns if r.get(side) and r.get(f"{side}Direct") is not None]
    ttfc = [r[side]["ttfc"] for r in rows]
    direct = [r[f"{side}Direct"] for r in rows]
    overhead = [r[side]["ttfc"] - r[f"{side}Direct"] for r in rows]
    lead = [r[f"{side}Lead"] for r in rows if f"{side}Lead" in r]
    first_lead = [r[f"{side}FirstLead"] for r in rows if f"{side}FirstLead" in r]
    calls = sum(r.get(f"{side}Calls", 0) for r in rows)
    return {
        "turns": len(rows),
        "ttfcP50": percentile(ttfc, 50),
        "ttfcP90": percentile(ttfc, 90),
        "directP50": percentile(direct, 50),
        "directP90": percentile(direct, 90),
        "overheadP50": percentile(overhead, 50),
        "overheadP90": percentile(overhead, 90),
        "overheadP99": percentile(overhead, 99),
        "leadP50": percentile(lead, 50),
        "firstLeadP50": percentile(first_lead, 50),
        "calls": calls,
        "callsPerTurn": round(calls / len(rows), 2) if rows else None,
        "cancelled": sum(r.get(f"{side}Cancelled", 0) for r in rows),
    }


def _bursts(turns: list[dict[str, Any]], conversations: int, delay: float) -> list[int]:
    """Bursts of replies per conversation: runs of our turns each sent less than the summary
    debounce after the previous one (a debounced summary fires once per burst)."""
    out = []
    for c in range(conversations):
        sent = sorted(r["ours"]["sent"] for r in turns if r["conversation"] == c and r.get("ours"))
        gaps = sum(1 for a, b in itertools.pairwise(sent) if b - a >= delay)
        out.append(1 + gaps if sent else 0)
    return out


def _summaries(result: dict[str, Any], replies: int) -> dict[str, Any]:
    calls = result.get("summaries", [])
    chars = [c["chars"] for c in calls]
    per_conversation = {c: 0 for c in range(result["conversations"])}
    for call in calls:
        for c in call["conversations"]:
            if c in per_conversation:
                per_conversation[c] += 1
    bursts = _bursts(result["turns"], result["conversations"], result["summaryDelaySeconds"])
    return {
        "calls": len(calls),
        "perReply": len(calls) / replies if replies else None,
        "perConversation": list(per_conversation.values()),
        "bursts": bursts,
        # Calls beyond one per burst, conversation by conversation.
        "overBursts": sum(
            max(0, n - b) for n, b in zip(per_conversation.values(), bursts, strict=True)
        ),
        "charsTotal": sum(chars),
        "charsPerCallMean": statistics.mean(chars) if chars else None,
        "charsPerCallMax": max(chars) if chars else None,
        "charsPerReply": sum(chars) / replies if replies else None,
    }


def _mean(values: list[int]) -> float | None:
    return statistics.mean(values) if values else None


def _firestore(turns: list[dict[str, Any]]) -> dict[str, Any]:
    counted = [r for r in turns if "firestore" in r]
    warm = [r for r in counted if r["turn"] >= 1]
    first = [r for r in counted if r["turn"] == 0]
    reads = [_total(r, "reads") for r in warm]
    workers: dict[str, int] = {}
    for r in counted:
        workers[r["worker"]] = workers.get(r["worker"], 0) + 1
    return {
        "warmTurns": len(warm),
        "readsMean": _mean(reads),
        "readsP50": percentile(reads, 50),
        "readsMax": max(reads) if reads else None,
        "readsInRequestMean": _mean([r["firestore"]["reads"] for r in warm]),
        "readsAfterMean": _mean([r["firestoreAfter"]["reads"] for r in warm]),
        "writesMean": _mean([_total(r, "writes") for r in warm]),
        "writesAfterMean": _mean([r["firestoreAfter"]["writes"] for r in warm]),
        "rpcsMean": _mean([_total(r, "rpcs") for r in warm]),
        "firstReadsMean": _mean([_total(r, "reads") for r in first]),
        "firstWritesMean": _mean([_total(r, "writes") for r in first]),
        # The bound: one small document plus the messages that changed.
        "withinBound": sum(1 for r in warm if _total(r, "reads") <= 1 + r["changed"]),
        "wholeHistory": sum(
            1
            for r in warm
            if r["stored"] >= WHOLE_HISTORY_MIN
            and _total(r, "reads") >= r["stored"]
            and r["changed"] + 2 < r["stored"]
        ),
        "turnsPerWorker": dict(sorted(workers.items())),
    }


def round_figures(result: dict[str, Any]) -> dict[str, Any]:
    turns = result["turns"]
    figures: dict[str, Any] = {side: _side(turns, side) for side in SIDES}
    figures["summaries"] = _summaries(result, figures["ours"]["turns"])
    figures["firestore"] = _firestore(turns)
    figures["historyAtLastTurn"] = 2 * (result["turnsPerConversation"] - 1)
    return figures
