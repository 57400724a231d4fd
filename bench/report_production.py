"""The production comparison in the report: its headline rows and its detailed tables."""

from __future__ import annotations

from typing import Any

from .stats import met, ms, table

# Issue 19's targets: our overhead against the predecessor's, by the model's time to first token.
OVERHEAD_TARGETS = {0: {"P50": 0.008, "P90": 0.015}, 300: {"P50": 0.002}}
HISTORY_MAX_CHARS = 200_000  # functions/ default; --env HISTORY_MAX_CHARS=N changes it


def _round_name(delay_ms: int) -> str:
    return "model answers at once (TTFT 0)" if delay_ms == 0 else f"TTFT {delay_ms} ms"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{ms(value)} ms"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline(r: dict[str, Any]) -> list[list[str]]:
    """figure | ours | predecessor | target | met, for the production setup."""
    prod = r["production"]
    rounds = prod["rounds"]
    rows: list[list[str]] = []
    for rnd in rounds:
        ours, theirs = rnd["figures"]["ours"], rnd["figures"]["predecessor"]
        for p, margin in OVERHEAD_TARGETS.get(rnd["firstDelayMs"], {}).items():
            a, b = ours[f"overhead{p}"], theirs[f"overhead{p}"]
            rows.append(
                [
                    f"first-text overhead {p.lower()}, {_round_name(rnd['firstDelayMs'])}",
                    _ms(a),
                    _ms(b),
                    f"<= predecessor + {margin * 1000:.0f} ms",
                    met(None if a is None or b is None else a <= b + margin),
                ]
            )
    ours_calls = sum(x["figures"]["ours"]["calls"] for x in rounds)
    ours_turns = sum(x["figures"]["ours"]["turns"] for x in rounds)
    their_calls = sum(x["figures"]["predecessor"]["calls"] for x in rounds)
    their_turns = sum(x["figures"]["predecessor"]["turns"] for x in rounds)
    rows.append(
        [
            "Gemini stream calls per turn",
            _per(ours_calls, ours_turns),
            _per(their_calls, their_turns),
            "exactly 1.00",
            met(ours_calls == ours_turns if ours_turns else None),
        ]
    )
    rows += _summary_rows(r, rounds)
    rows += _firestore_rows(rounds)
    for rnd in rounds:
        ours, theirs = rnd["figures"]["ours"], rnd["figures"]["predecessor"]
        rows.append(
            [
                f"model request leaves after (p50), {_round_name(rnd['firstDelayMs'])}",
                _ms(ours["leadP50"]),
                _ms(theirs["leadP50"]),
                "-",
                "-",
            ]
        )
    return rows


def _per(count: int, turns: int) -> str:
    return f"{count / turns:.2f} ({count} / {turns})" if turns else "-"


def _summary_rows(r: dict[str, Any], rounds: list[dict[str, Any]]) -> list[list[str]]:
    summaries = [x["figures"]["summaries"] for x in rounds]
    calls = sum(s["calls"] for s in summaries)
    replies = sum(x["figures"]["ours"]["turns"] for x in rounds)
    chars = sum(s["charsTotal"] for s in summaries)
    bursts = sum(sum(s["bursts"]) for s in summaries)
    over = sum(s["overBursts"] for s in summaries)
    biggest = max((s["charsPerCallMax"] or 0 for s in summaries), default=0)
    limit = _history_max_chars(r)
    if not replies:
        return []
    return [
        [
            "summary calls per reply",
            f"{calls / replies:.2f} ({calls} calls / {replies} replies)",
            "none",
            "<= 1",
            met(calls <= replies),
        ],
        [
            "summary calls per burst of replies (< SUMMARY_DELAY_SECONDS apart)",
            f"{calls / bursts:.2f} ({bursts} bursts, {over} calls beyond one per burst)"
            if bursts
            else "-",
            "none",
            "1: a burst makes one call",
            met(over == 0 if bursts else None),
        ],
        [
            "summary input characters per reply (largest call)",
            f"{chars / replies:,.0f} ({biggest:,})",
            "none",
            f"largest call <= HISTORY_MAX_CHARS ({limit:,})",
            met(biggest <= limit),
        ],
    ]


def _history_max_chars(r: dict[str, Any]) -> int:
    for item in r.get("env") or []:
        name, _, value = item.partition("=")
        if name == "HISTORY_MAX_CHARS" and value.isdigit():
            return int(value)
    return HISTORY_MAX_CHARS


def _firestore_rows(rounds: list[dict[str, Any]]) -> list[list[str]]:
    figures = [
        x["figures"]["firestore"]
        for x in rounds
        if x.get("counted") and x["figures"]["firestore"]["warmTurns"]
    ]
    warm = sum(f["warmTurns"] for f in figures)
    if not warm:
        return []

    def mean(key: str) -> float:
        return sum(f[key] * f["warmTurns"] for f in figures) / warm

    within = sum(f["withinBound"] for f in figures)
    whole = sum(f["wholeHistory"] for f in figures)
    most = max(f["readsMax"] for f in figures)
    return [
        [
            "Firestore reads per warm turn",
            f"{mean('readsMean'):.1f} ({mean('readsAfterMean'):.1f} after the response; max "
            f"{most}; {within}/{warm} within the bound, {whole} whole-history reads)",
            "none (stores nothing)",
            "<= 1 + messages changed since the worker last looked",
            met(within == warm),
        ],
        [
            "Firestore writes per warm turn",
            f"{mean('writesMean'):.1f} ({mean('writesAfterMean'):.1f} after the response)",
            "none",
            "-",
            "-",
        ],
    ]


def section(r: dict[str, Any]) -> str:
    prod = r["production"]
    rounds = prod["rounds"]
    plan = r["plan"]["production"]
    waited = (
        f"SUMMARY_DELAY_SECONDS set to {prod['summaryWaitSeconds'] - 5:g} s for this run (not the "
        "default)"
        if prod.get("summaryDelaySet")
        else "the default SUMMARY_DELAY_SECONDS of 10 s"
    )
    intro = (
        f"### Production setup: {prod['instances']} instances x {prod['workers']} workers "
        f"(deploy.sh's WORKERS), THREADS={prod['threads']}, vs the predecessor\n"
        f"Each round: {plan['conversations']} new conversations of {plan['turns']} turns, built "
        f"by real turns and interleaved round-robin (history 0 to "
        f"{2 * (plan['turns'] - 1)} messages); each turn of ours to an instance picked at random "
        f"(seed {plan['seed']}), then the same request straight to the stand-in; the predecessor "
        f"takes the same turn with the whole conversation in its body, then its own direct "
        f"request; which side goes first alternates. User messages of {plan['user_chars']} "
        f"characters, replies of {_reply_chars(plan)} "
        f"({plan['chunks']} chunks). The instances were warmed with throwaway conversations "
        f"first, and every turn of a round counts. After each round the benchmark waited "
        f"{prod['summaryWaitSeconds']:g} s ({waited}) so that its summaries count with it.\n\n"
    )
    tables = [intro + _latency_table(rounds), _calls_table(rounds), _firestore_table(rounds)]
    return "\n\n".join([*tables, *_notes(rounds)])


def _reply_chars(plan: dict[str, Any]) -> int:
    """The stand-in's reply: `Echo: <user text>` and `words` filler words ` w1 .. wN`."""
    filler = "".join(f" w{i}" for i in range(1, plan["reply_words"] + 1))
    return len("Echo: ") + plan["user_chars"] + len(filler)


def _latency_table(rounds: list[dict[str, Any]]) -> str:
    rows = []
    for rnd in rounds:
        for side in ("ours", "predecessor"):
            f = rnd["figures"][side]
            rows.append(
                [
                    _round_name(rnd["firstDelayMs"]) if side == "ours" else "",
                    side,
                    str(f["turns"]),
                    f"{ms(f['ttfcP50'])} / {ms(f['ttfcP90'])}",
                    f"{ms(f['directP50'])} / {ms(f['directP90'])}",
                    f"**{ms(f['overheadP50'])}** / **{ms(f['overheadP90'])}** / "
                    f"{ms(f['overheadP99'])}",
                    f"{ms(f['leadP50'])} / {ms(f['firstLeadP50'])}",
                ]
            )
    return "First text chunk, ms.\n\n" + table(
        [
            "round",
            "server",
            "turns",
            "first text p50 / p90",
            "direct p50 / p90",
            "overhead p50 / p90 / p99",
            "model request after p50: answering / first call",
        ],
        rows,
    )


def _calls_table(rounds: list[dict[str, Any]]) -> str:
    rows = []
    for rnd in rounds:
        f = rnd["figures"]
        s = f["summaries"]
        ours, theirs = f["ours"], f["predecessor"]
        rows.append(
            [
                _round_name(rnd["firstDelayMs"]),
                f"{_num(ours['callsPerTurn'])} ({ours['cancelled']} cancelled)",
                _num(theirs["callsPerTurn"]),
                f"{s['calls']} ({_num(s['perReply'])} per reply; per conversation "
                f"{'/'.join(map(str, s['perConversation']))}, bursts "
                f"{'/'.join(map(str, s['bursts']))})",
                f"{_num(s['charsPerCallMean'], 0)} / {s['charsPerCallMax'] or '-'}",
                _num(s["charsPerReply"], 0),
            ]
        )
    return "Gemini calls (from the stand-in's recording).\n\n" + table(
        [
            "round",
            "ours: stream calls per turn",
            "predecessor",
            "summary calls",
            "summary input chars per call: mean / max",
            "summary input chars per reply",
        ],
        rows,
    )


def _firestore_table(rounds: list[dict[str, Any]]) -> str:
    rows = []
    for rnd in rounds:
        if not rnd.get("counted"):
            rows.append([_round_name(rnd["firstDelayMs"]), "not counted", *["-"] * 7])
            continue
        f = rnd["figures"]["firestore"]
        after = rnd.get("firestoreSummaryWait") or {}
        rows.append(
            [
                _round_name(rnd["firstDelayMs"]),
                str(f["warmTurns"]),
                f"{_num(f['readsMean'], 1)} / {_num(f['readsP50'], 0)} / {_num(f['readsMax'], 0)}",
                f"{_num(f['readsInRequestMean'], 1)} / {_num(f['readsAfterMean'], 1)}",
                f"{f['withinBound']} / {f['wholeHistory']}",
                f"{_num(f['writesMean'], 1)} ({_num(f['writesAfterMean'], 1)} after) / "
                f"{_num(f['rpcsMean'], 1)}",
                f"{_num(f['firstReadsMean'], 1)} / {_num(f['firstWritesMean'], 1)}",
                f"{after.get('reads', 0)} / {after.get('writes', 0)}",
                " / ".join(str(n) for n in f["turnsPerWorker"].values()),
            ]
        )
    return (
        "Firestore, ours (counted on the wire per turn, summed over both instances).\n\n"
        + table(
            [
                "round",
                "warm turns",
                "reads per warm turn: mean / p50 / max",
                "of which: in the request / after the response (mean)",
                "within 1 + changed / whole-history reads",
                "writes / RPCs per warm turn",
                "first turn: reads / writes",
                "summary wait: reads / writes",
                "turns per worker",
            ],
            rows,
        )
    )


def _notes(rounds: list[dict[str, Any]]) -> list[str]:
    notes = []
    for rnd in rounds:
        name = _round_name(rnd["firstDelayMs"])
        if rnd.get("contentsMismatches"):
            notes.append(
                f"- {name}: in {rnd['contentsMismatches']} turns our model request's contents "
                "differed from the direct request's (the overhead compares unlike requests there)."
            )
        if any((rnd.get("strays") or {}).values()):
            notes.append(f"- {name}: model calls that named no turn of the round: {rnd['strays']}.")
        if rnd.get("recordingFull"):
            notes.append(f"- {name}: the stand-in's recording was full; calls may be undercounted.")
    return ["Notes:\n" + "\n".join(notes)] if notes else []
