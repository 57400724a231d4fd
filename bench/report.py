"""Turns the results of a run into the tables bench.sh prints (Markdown, README-ready)."""

from __future__ import annotations

from typing import Any

from .stats import ms, percentile, table

KIB = 1024


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [
        f"Benchmark run {m['date']} ({r['mode']} mode, {r.get('seconds', 0):.0f} s)  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; Linux {m['kernel']}, "
        f"Python {m['python']}  ",
        f"Other load on the machine: {r.get('busyBefore', 0) * 100:.0f} % CPU busy before the run; "
        f"load average {_load(r.get('loadBefore'))} before, {_load(r.get('loadAfter'))} after"
        + (f"  \nExtra function environment: {' '.join(r['env'])}" if r.get("env") else ""),
        "",
    ]
    summary: list[list[str]] = []
    sections: list[str] = []

    if "firstChunk" in r:
        _first_chunk(r, summary, sections)
    if "relay" in r:
        _relay(r, summary, sections)
    if "load" in r:
        _load_table(r, summary, sections)
    if "firestore" in r:
        _firestore(r, summary, sections)
    if "coldStart" in r:
        _cold(r, summary, sections)
    out.append("### Targets\n" + table(["figure", "measured", "target", "met"], summary))
    out.extend(["", *"\n\n".join(sections).split("\n")])
    return "\n".join(out)


def _load(values: Any) -> str:
    return "-" if not values else " ".join(f"{v:.1f}" for v in values)


def _first_chunk(r: dict[str, Any], summary: list[list[str]], sections: list[str]) -> None:
    rows = []
    for row in r["firstChunk"]:
        h = row["history"]
        warm_over = [
            _diff(row["warm"], row["warmDirect"], p) for p in (50, 99)
        ]  # overhead = function percentile - direct percentile
        cold_over = [_diff(row["cold"], row["coldDirect"], p) for p in (50, 99)]
        grown = f"{h}-{row['historyAtEnd']}" if h else "0 (new)"
        rows.append(
            [
                grown,
                str(len(row["warm"])),
                f"{ms(percentile(row['warm'], 50))} / {ms(percentile(row['warm'], 99))}",
                f"{ms(percentile(row['warmDirect'], 50))} / "
                f"{ms(percentile(row['warmDirect'], 99))}",
                f"**{ms(warm_over[0])}** / {ms(warm_over[1])}",
                f"{ms(cold_over[0])} / {ms(cold_over[1])} (n={len(row['cold'])})"
                if row["cold"]
                else "= warm",
            ]
        )
        if h == max(x["history"] for x in r["firstChunk"]):
            summary.append(
                [
                    f"first-chunk overhead p50, {h} stored messages, warm instance",
                    f"{ms(warm_over[0])} ms",
                    "<= 10 ms",
                    _yes(warm_over[0] is not None and warm_over[0] <= 0.010),
                ]
            )
    sections.append(
        "### Time to first text chunk: through the function vs straight from the stand-in\n"
        "p50 / p99 in ms. Overhead = function percentile - stand-in percentile (same request "
        "contents, interleaved). Cold = first turn on a conversation this instance never "
        "saw.\n\n"
        + table(
            [
                "stored messages",
                "turns",
                "function",
                "stand-in direct",
                "overhead (warm)",
                "overhead (cold cache)",
            ],
            rows,
        )
    )


def _relay(r: dict[str, Any], summary: list[list[str]], sections: list[str]) -> None:
    relay = r["relay"]
    d, g = relay["delays"], relay["gaps"]
    streams = relay["streams"]
    separate = sum(s["reads"] for s in streams)
    total = sum(s["chunks"] for s in streams)
    p50, p99 = percentile(d, 50), percentile(d, 99)
    sections.append(
        f"### Relay delay per chunk (stand-in emits -> client receives)\n"
        f"{len(streams)} streams x {relay['chunks']} chunks, stand-in delay_ms="
        f"{relay['delayMs']}.\n\n"
        + table(
            ["relay p50", "relay p99", "relay max", "gap p50", "gap min", "separate arrivals"],
            [
                [
                    f"{ms(p50, 2)} ms",
                    f"{ms(p99, 2)} ms",
                    f"{ms(max(d) if d else None, 2)} ms",
                    f"{ms(percentile(g, 50))} ms",
                    f"{ms(min(g) if g else None)} ms",
                    f"{separate} reads for {total} chunks",
                ]
            ],
        )
    )
    summary.append(
        [
            "relay delay per chunk p50 / p99",
            f"{ms(p50, 2)} / {ms(p99, 2)} ms",
            "<= 1 / <= 5 ms",
            _yes(p50 is not None and p99 is not None and p50 <= 0.001 and p99 <= 0.005),
        ]
    )
    summary.append(
        [
            "chunks arrive separately, not coalesced",
            f"{separate}/{total} separate, gaps p50 {ms(percentile(g, 50))} ms",
            f"{total} separate, ~{relay['delayMs']} ms apart",
            _yes(separate == total),
        ]
    )


def _load_table(r: dict[str, Any], summary: list[list[str]], sections: list[str]) -> None:
    rows = []
    for row in r["load"]:
        kinds = ", ".join(f"{k}: {v}" for k, v in row["errorKinds"].items())
        other = row.get("otherCpu", {})
        rows.append(
            [
                str(row["streams"]),
                f"{row.get('checkpointSeconds', 1):g} s",
                str(row["errors"]) + (f" ({kinds})" if kinds else ""),
                f"{ms(row['ttfcP50'])} / {ms(row['ttfcP99'])}",
                f"{row['idleRss'] / KIB / KIB:.0f} MiB",
                f"{row['plateauRss'] / KIB / KIB:.0f} MiB",
                f"**{row['rssPerStream'] / KIB:.0f} KiB**",
                f"{row['cpuPerStream'] * 1000:.0f} ms",
                f"{row['cpu']:.0f} / {other.get('emulator', 0):.0f} / "
                f"{other.get('standin', 0):.0f} / {other.get('client', 0):.0f}",
                str(row["peakThreads"]),
                f"{row['wall']:.0f} s",
            ]
        )
    biggest = max(r["load"], key=lambda x: (x["streams"], x.get("checkpointSeconds", 1)))
    sections.append(
        f"### Concurrent streams on one instance (1 worker, THREADS = streams)\n"
        f"Each stream: a new conversation, {biggest['streamSeconds']:.0f} s of chunks every "
        f"{r['plan']['load_delay_ms']} ms, streams started evenly over the ramp "
        f"({biggest['ramp']:.0f} s for {biggest['streams']}). RSS = master + worker; plateau = "
        f"peak while every stream was open; per stream = (plateau - idle) / streams. CPU = "
        f"utime + stime over the whole run (ramp, plateau, drain). Checkpoint = "
        f"CHECKPOINT_SECONDS: the production 1 s means one Firestore write per stream per second, "
        f"more than the emulator sustains on this machine at 500+ streams, so the larger levels "
        f"checkpoint every {r['plan']['load_checkpoint_s']:g} s.\n\n"
        + table(
            [
                "streams",
                "checkpoint",
                "errors",
                "first chunk p50 / p99 ms",
                "idle RSS",
                "plateau RSS",
                "RSS / stream",
                "CPU / stream",
                "CPU s: function / emulator / stand-in / client",
                "threads",
                "wall",
            ],
            rows,
        )
    )
    summary.append(
        [
            f"{biggest['streams']} concurrent streams: errors",
            str(biggest["errors"]),
            "0",
            _yes(biggest["errors"] == 0),
        ]
    )
    summary.append(
        [
            f"{biggest['streams']} concurrent streams: RSS per stream",
            f"{biggest['rssPerStream'] / KIB:.0f} KiB",
            "<= 256 KiB",
            _yes(biggest["rssPerStream"] <= 256 * KIB),
        ]
    )


def _firestore(r: dict[str, Any], summary: list[list[str]], sections: list[str]) -> None:
    rows = []
    warm_reads = []
    for row in r["firestore"]:
        warm = row["warm"]
        reads = sorted({w.get("reads", 0) for w in warm})
        warm_reads.append(reads)
        cold = row["cold"]
        rows.append(
            [
                str(row["history"]) if row["history"] else "0 (new)",
                f"{cold.get('reads', 0)} / {cold.get('writes', 0)} / {cold.get('rpcs', 0)}",
                " ".join(
                    f"{w.get('reads', 0)}/{w.get('writes', 0)}/{w.get('rpcs', 0)}" for w in warm
                ),
            ]
        )
    sections.append(
        "### Firestore documents per turn (counted on the wire by bench/counting_main.py)\n"
        "reads / writes / RPCs; a turn of < 1 s (no checkpoint: each further second of "
        "streaming adds 1 write).\n\n"
        + table(["stored messages", "first turn on this instance", "next turns (each)"], rows)
    )
    flat = all(len(x) == 1 for x in warm_reads) and len({x[0] for x in warm_reads}) == 1
    summary.append(
        [
            "reads per turn, same instance, 0 / 50 / 200 stored",
            " / ".join("/".join(map(str, x)) for x in warm_reads),
            "does not grow with history",
            _yes(flat),
        ]
    )


def _cold(r: dict[str, Any], summary: list[list[str]], sections: list[str]) -> None:
    rows = []
    for name, imp in r["import"].items():
        rows.append(
            [
                f"import functions/main.py, {name}",
                f"{imp['median'] * 1000:.0f} ms (CPU {imp['cpu'] * 1000:.0f} ms)",
                " ".join(f"{x * 1000:.0f}" for x in imp["all"]),
            ]
        )
    for name, cold in r["coldStart"].items():
        for key, label in (
            ("listening", "spawn -> port listening"),
            ("firstByte", "spawn -> first response byte"),
            ("firstText", "spawn -> first text chunk"),
        ):
            rows.append(
                [
                    f"{label}, {name}",
                    f"{cold[key] * 1000:.0f} ms",
                    " ".join(f"{x[key] * 1000:.0f}" for x in cold["runs"]),
                ]
            )
    first_name, first_imp = next(iter(r["import"].items()))
    top = ", ".join(f"{name} {us / 1000:.0f}" for name, us in first_imp["top"])
    sections.append(
        "### Cold start (AUTH_MODE=firebase, as deployed)\n"
        "Deployed dependencies = the dev venv with aiohttp, h2 and pygments hidden "
        "(bench/deployed_site): google-genai imports aiohttp only when it is installed, and "
        "functions/requirements.txt does not install it.\n\n"
        + table(["figure", "median", "all runs (ms)"], rows)
        + f"\n\nImport self time by package, {first_name} (ms, `-X importtime`): {top}"
    )
    name, cold = next(iter(r["coldStart"].items()))
    summary.append(
        [
            f"cold start: spawn -> first streamed byte ({name})",
            f"{cold['firstByte'] * 1000:.0f} ms",
            "<= 1500 ms",
            _yes(cold["firstByte"] <= 1.5),
        ]
    )


def _diff(a: list[float], b: list[float], p: float) -> float | None:
    x, y = percentile(a, p), percentile(b, p)
    return None if x is None or y is None else x - y
