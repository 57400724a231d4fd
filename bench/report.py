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
        f"Python {m['python']}, Node {m.get('node', '?')}  ",
        f"Other load on the machine: {r.get('busyBefore', 0) * 100:.0f} % CPU busy before the run; "
        f"load average {_load(r.get('loadBefore'))} before, {_load(r.get('loadAfter'))} after"
        + (f"  \nExtra function environment: {' '.join(r['env'])}" if r.get("env") else ""),
        "",
    ]
    summary: list[list[str]] = []
    versus: list[list[str]] = []
    sections: list[str] = []

    if "firstChunk" in r:
        _first_chunk(r, summary, versus, sections)
    if "relay" in r:
        _relay(r, summary, versus, sections)
    if "load" in r:
        _load_table(r, summary, versus, sections)
    if "firestore" in r:
        _firestore(r, summary, sections)
    if "coldStart" in r:
        _cold(r, summary, sections)
    if r.get("failures"):
        out.append(
            "**Failed (the rest of the run went on):**\n\n"
            + "\n".join(f"- {name}: `{_one_line(text)}`" for name, text in r["failures"].items())
            + "\n"
        )
    if versus:
        out.append(
            "### Ours vs the predecessor (AI SDK streamText route, no storage)\n"
            "Same run, same stand-in, same client. Ratio = ours / predecessor: below 1 means "
            "ours is lower (faster, smaller). Overhead = time to the first text chunk minus "
            "the same request sent straight to the stand-in.\n\n"
            + table(["figure", "ours", "predecessor", "ratio"], versus)
            + "\n"
        )
    if summary:
        out.append("### Targets\n" + table(["figure", "measured", "target", "met"], summary))
    out.extend(["", *"\n\n".join(sections).split("\n")])
    return "\n".join(out)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-limit:]


def _load(values: Any) -> str:
    return "-" if not values else " ".join(f"{v:.1f}" for v in values)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs <= 0 or ours < 0:
        return "-"
    return f"{ours / theirs:.2f}"


def _triple(values: list[float | None], digits: int = 1) -> str:
    return " / ".join(ms(v, digits) for v in values)


FIRST_CHUNK_PERCENTILES = (50, 95, 99)


def _first_chunk(
    r: dict[str, Any], summary: list[list[str]], versus: list[list[str]], sections: list[str]
) -> None:
    rows = []
    for row in r["firstChunk"]:
        h = row["history"]
        theirs = row.get("predecessor") or []
        # overhead = percentile through the server - the same percentile straight from upstream
        warm_over = [_diff(row["warm"], row["warmDirect"], p) for p in FIRST_CHUNK_PERCENTILES]
        their_over = [_diff(theirs, row["warmDirect"], p) for p in FIRST_CHUNK_PERCENTILES]
        cold_over = [_diff(row["cold"], row["coldDirect"], p) for p in (50, 99)]
        grown = f"{h}-{row['historyAtEnd']}" if h else "0 (new)"
        rows.append(
            [
                grown,
                str(max(len(row["warm"]), len(theirs))),
                _triple([percentile(row["warm"], p) for p in FIRST_CHUNK_PERCENTILES]),
                _triple([percentile(row["warmDirect"], p) for p in FIRST_CHUNK_PERCENTILES]),
                f"**{ms(warm_over[0])}** / {ms(warm_over[1])} / {ms(warm_over[2])}",
                f"{ms(cold_over[0])} / {ms(cold_over[1])} (n={len(row['cold'])})"
                if row["cold"]
                else "= warm",
                _triple([percentile(theirs, p) for p in FIRST_CHUNK_PERCENTILES]),
                f"**{ms(their_over[0])}** / {ms(their_over[1])} / {ms(their_over[2])}",
            ]
        )
        versus.append(
            [
                f"first-text overhead p50 / p95 / p99 ms, {h} stored messages",
                _triple(warm_over),
                _triple(their_over),
                " / ".join(_ratio(a, b) for a, b in zip(warm_over, their_over, strict=True)),
            ]
        )
        if h == max(x["history"] for x in r["firstChunk"]) and row["warm"]:
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
        "p50 / p95 / p99 in ms. Overhead = server percentile - stand-in percentile (same request "
        "contents, interleaved: ours, direct, predecessor). Cold = first turn on a conversation "
        "our instance never saw. The predecessor gets the stored history in the request body, "
        "as useChat sends it, and stores nothing.\n\n"
        + table(
            [
                "stored messages",
                "turns",
                "ours",
                "stand-in direct",
                "ours overhead (warm)",
                "ours overhead (cold cache) p50 / p99",
                "predecessor",
                "predecessor overhead",
            ],
            rows,
        )
    )


def _relay_row(name: str, relay: dict[str, Any]) -> list[str]:
    d, g = relay["delays"], relay["gaps"]
    separate = sum(s["reads"] for s in relay["streams"])
    total = sum(s["chunks"] for s in relay["streams"])
    return [
        name,
        f"{ms(percentile(d, 50), 2)} ms",
        f"{ms(percentile(d, 99), 2)} ms",
        f"{ms(max(d) if d else None, 2)} ms",
        f"{ms(percentile(g, 50))} ms",
        f"{ms(min(g) if g else None)} ms",
        f"{separate} reads for {total} chunks",
    ]


def _relay(
    r: dict[str, Any], summary: list[list[str]], versus: list[list[str]], sections: list[str]
) -> None:
    relay = r["relay"]
    theirs = relay.get("predecessor")
    rows = []
    if "delays" in relay:
        rows.append(_relay_row("ours", relay))
    if theirs:
        rows.append(_relay_row("predecessor", theirs))
    sections.append(
        f"### Relay delay per chunk (stand-in emits -> client receives)\n"
        f"{len(relay.get('streams', theirs['streams'] if theirs else []))} streams x "
        f"{relay['chunks']} chunks each, stand-in delay_ms={relay['delayMs']}, the same tap in "
        f"front of the stand-in for both.\n\n"
        + table(
            [
                "server",
                "relay p50",
                "relay p99",
                "relay max",
                "gap p50",
                "gap min",
                "separate arrivals",
            ],
            rows,
        )
    )
    ours_d = relay.get("delays", [])
    their_d = theirs["delays"] if theirs else []
    pairs = [(percentile(ours_d, p), percentile(their_d, p)) for p in (50, 99)]
    versus.append(
        [
            "relay delay per chunk p50 / p99 ms",
            " / ".join(ms(a, 2) for a, _ in pairs),
            " / ".join(ms(b, 2) for _, b in pairs),
            " / ".join(_ratio(a, b) for a, b in pairs),
        ]
    )
    if "delays" not in relay:
        return
    p50, p99 = pairs[0][0], pairs[1][0]
    g = relay["gaps"]
    separate = sum(s["reads"] for s in relay["streams"])
    total = sum(s["chunks"] for s in relay["streams"])
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


def _ok(row: dict[str, Any] | None) -> bool:
    return bool(row) and "failed" not in row  # type: ignore[operator]


def _writes(row: dict[str, Any]) -> str:
    """Firestore write RPCs during the run: count, rate over the wall time, latency by kind."""
    fs = row.get("firestore")
    if not fs:
        return "-"
    commits, batches = fs.get("commits", 0), fs.get("batch_writes", 0)
    parts = []
    for name, count, key in (("Commit", commits, "commit"), ("BatchWrite", batches, "batch_write")):
        if count:
            parts.append(
                f"{name} {count}: {fs.get(f'{key}P50Ms', '-')} / {fs.get(f'{key}P99Ms', '-')} / "
                f"{fs.get(f'{key}MaxMs', '-')} ms"
            )
    return f"{(commits + batches) / row['wall']:.0f}/s; " + "; ".join(parts or ["none"])


def _load_table(
    r: dict[str, Any], summary: list[list[str]], versus: list[list[str]], sections: list[str]
) -> None:
    rows = []
    any_row: dict[str, Any] | None = None
    for level in r["load"]:
        for impl in ("ours", "predecessor"):
            row = level.get(impl)
            if not _ok(row):
                failed = (row or {}).get("failed", "not run")
                rows.append([str(level["streams"]), impl, f"failed: {_one_line(failed, 120)}"])
                rows[-1] += ["-"] * 9
                continue
            assert row is not None
            any_row = row
            kinds = ", ".join(f"{k}: {v}" for k, v in row["errorKinds"].items())
            other = row.get("otherCpu", {})
            rows.append(
                [
                    str(row["streams"]),
                    impl
                    + (
                        f" ({row['workers']}x{row['threads']}, cp {row['checkpointSeconds']:g} s"
                        + (
                            f", split {'/'.join(map(str, row['perWorker']))})"
                            if row.get("perWorker")
                            else ")"
                        )
                        if impl == "ours"
                        else ""
                    ),
                    str(row["errors"]) + (f" ({kinds})" if kinds else ""),
                    f"{row['wall']:.1f} s",
                    f"{ms(row['ttfcP50'])} / {ms(row['ttfcP99'])}",
                    f"{row['idleRss'] / KIB / KIB:.0f} MiB",
                    f"{row['plateauRss'] / KIB / KIB:.0f} MiB",
                    f"**{row['rssPerStream'] / KIB:.0f} KiB**",
                    f"{row['cpuPerStream'] * 1000:.0f} ms",
                    f"{row['cpu']:.0f} / {other.get('emulator', 0):.0f} / "
                    f"{other.get('standin', 0):.0f} / {other.get('client', 0):.0f}",
                    _writes(row),
                    str(row["peakThreads"]),
                ]
            )
        ours, theirs = level.get("ours"), level.get("predecessor")
        n = level["streams"]

        def pair(key: str, ours: Any = ours, theirs: Any = theirs) -> tuple[Any, Any]:
            return (
                ours[key] if _ok(ours) else None,
                theirs[key] if _ok(theirs) else None,
            )

        errors, wall = pair("errors"), pair("wall")
        p50, p99, rss = pair("ttfcP50"), pair("ttfcP99"), pair("rssPerStream")
        versus += [
            [
                f"{n} streams: errors",
                "-" if errors[0] is None else str(errors[0]),
                "-" if errors[1] is None else str(errors[1]),
                "",
            ],
            [
                f"{n} streams: wall time s",
                "-" if wall[0] is None else f"{wall[0]:.1f}",
                "-" if wall[1] is None else f"{wall[1]:.1f}",
                f"**{_ratio(wall[0], wall[1])}**",
            ],
            [
                f"{n} streams: first text p50 / p99 ms",
                f"{ms(p50[0])} / {ms(p99[0])}",
                f"{ms(p50[1])} / {ms(p99[1])}",
                f"{_ratio(p50[0], p50[1])} / {_ratio(p99[0], p99[1])}",
            ],
            [
                f"{n} streams: RSS per stream KiB",
                "-" if rss[0] is None else f"{rss[0] / KIB:.0f}",
                "-" if rss[1] is None else f"{rss[1] / KIB:.0f}",
                _ratio(rss[0], rss[1]),
            ],
        ]
    if any_row is None:
        return
    workers = r.get("workers", 1)
    sections.append(
        f"### Concurrent streams on one instance, ours ({workers} worker(s)) and the predecessor "
        f"(one Node process)\n"
        f"Each stream: a new conversation, {r['plan']['load_chunks']} chunks "
        f"{r['plan']['load_delay_ms']} ms apart ({any_row['streamSeconds']:.1f} s), streams "
        f"started evenly over {any_row['ramp']:.1f} s; a fresh instance for every row. Ours = "
        f"WORKERS x THREADS, checkpoint = CHECKPOINT_SECONDS, split = streams each worker "
        f"served (a gthread worker keeps accepting when its threads are busy, and those "
        f"streams wait for a thread). RSS = every process of the instance "
        f"(gunicorn master + workers; the node process); plateau = peak while every stream was "
        f"open; per stream = (plateau - idle) / streams. CPU = utime + stime over the whole run. "
        f"Firestore writes (ours, counted by bench/counting_main.py): Commit and BatchWrite RPCs, "
        f"their rate over the wall time, and each kind's count and latency p50 / p99 / max. "
        f"When that latency climbs to seconds and the emulator's CPU nears a core, the "
        f"emulator's write rate bounds the row.\n\n"
        + table(
            [
                "streams",
                "server",
                "errors",
                "wall",
                "first text p50 / p99 ms",
                "idle RSS",
                "plateau RSS",
                "RSS / stream",
                "CPU / stream",
                "CPU s: server / emulator / stand-in / client",
                "Firestore write RPCs: rate; count: latency p50 / p99 / max",
                "threads",
            ],
            rows,
        )
    )
    ours_rows = [lv["ours"] for lv in r["load"] if _ok(lv.get("ours"))]
    if not ours_rows:
        return
    biggest = max(ours_rows, key=lambda x: x["streams"])
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
