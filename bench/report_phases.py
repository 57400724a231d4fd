"""The relay, memory, load and cold-start phases in the report: headline rows and tables."""

from __future__ import annotations

from typing import Any

from .stats import met, ms, one_line, percentile, ratio, table

KIB = 1024
MIB = 1024 * 1024
WALL_TARGET = 1.1  # issue 19: 1000 streams in at most 1.1 x the predecessor's wall time
RSS_PER_STREAM_TARGET = 256 * KIB  # issue 11


# Relay ------------------------------------------------------------------------------------


def relay_headline(r: dict[str, Any]) -> list[list[str]]:
    relay = r["relay"]
    theirs = relay.get("predecessor") or {}
    ours_d, their_d = relay.get("delays", []), theirs.get("delays", [])
    p50, p99 = percentile(ours_d, 50), percentile(ours_d, 99)
    return [
        [
            "relay delay per chunk p50 / p99",
            _pair(p50, p99),
            _pair(percentile(their_d, 50), percentile(their_d, 99)),
            "<= 1 / <= 5 ms",
            met(None if p50 is None or p99 is None else p50 <= 0.001 and p99 <= 0.005),
        ]
    ]


def _pair(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None else f"{ms(p50, 2)} / {ms(p99, 2)} ms"


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


def relay_section(r: dict[str, Any]) -> str:
    relay = r["relay"]
    theirs = relay.get("predecessor")
    rows = []
    if "delays" in relay:
        rows.append(_relay_row("ours", relay))
    if theirs:
        rows.append(_relay_row("predecessor", theirs))
    streams = len(relay.get("streams", theirs["streams"] if theirs else []))
    return (
        f"### Relay delay per chunk (stand-in emits -> client receives)\n"
        f"{streams} streams x {relay['chunks']} chunks each, stand-in delay_ms="
        f"{relay['delayMs']}, the same tap in front of the stand-in for both; ours with "
        f"{r.get('workers', '?')} workers.\n\n"
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


# Concurrent streams -------------------------------------------------------------------------


def _ok(row: dict[str, Any] | None) -> bool:
    return bool(row) and "failed" not in row  # type: ignore[operator]


def load_headline(r: dict[str, Any]) -> list[list[str]]:
    levels = [lv for lv in r["load"] if _ok(lv.get("ours")) or _ok(lv.get("predecessor"))]
    if not levels:
        return []
    level = max(levels, key=lambda lv: lv["streams"])
    n = level["streams"]
    ours = level["ours"] if _ok(level.get("ours")) else None
    theirs = level["predecessor"] if _ok(level.get("predecessor")) else None
    memory = r.get("deployMemory", 1 << 30)

    def get(row: dict[str, Any] | None, key: str) -> Any:
        return None if row is None else row[key]

    wall, their_wall = get(ours, "wall"), get(theirs, "wall")
    rss, peak = get(ours, "rssPerStream"), get(ours, "peakRss")
    return [
        [
            f"{n} concurrent streams: errors",
            "-" if ours is None else str(ours["errors"]),
            "-" if theirs is None else str(theirs["errors"]),
            "0",
            met(None if ours is None else ours["errors"] == 0),
        ],
        [
            f"{n} concurrent streams: wall time",
            "-" if wall is None else f"{wall:.1f} s ({ratio(wall, their_wall)} x)",
            "-" if their_wall is None else f"{their_wall:.1f} s",
            f"<= {WALL_TARGET:g} x predecessor",
            met(None if wall is None or their_wall is None else wall <= WALL_TARGET * their_wall),
        ],
        [
            f"{n} concurrent streams: RSS per stream",
            "-" if rss is None else f"{rss / KIB:.0f} KiB",
            "-" if theirs is None else f"{theirs['rssPerStream'] / KIB:.0f} KiB",
            f"<= {RSS_PER_STREAM_TARGET // KIB} KiB",
            met(None if rss is None else rss <= RSS_PER_STREAM_TARGET),
        ],
        [
            f"{n} concurrent streams: peak RSS of the instance",
            "-" if peak is None else f"{peak / MIB:.0f} MiB",
            "-" if theirs is None else f"{theirs['peakRss'] / MIB:.0f} MiB",
            f"<= {memory / MIB:.0f} MiB (deploy.sh's memory)",
            met(None if peak is None else peak <= memory),
        ],
    ]


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


def _server(impl: str, row: dict[str, Any]) -> str:
    if impl != "ours":
        return impl
    split = f", split {'/'.join(map(str, row['perWorker']))}" if row.get("perWorker") else ""
    return f"ours ({row['workers']}x{row['threads']}, cp {row['checkpointSeconds']:g} s{split})"


def _load_row(impl: str, row: dict[str, Any]) -> list[str]:
    kinds = ", ".join(f"{k}: {v}" for k, v in row["errorKinds"].items())
    other = row.get("otherCpu", {})
    return [
        str(row["streams"]),
        _server(impl, row),
        str(row["errors"]) + (f" ({kinds})" if kinds else ""),
        f"{row['wall']:.1f} s",
        f"{ms(row['ttfcP50'])} / {ms(row['ttfcP99'])}",
        f"{row['idleRss'] / MIB:.0f} MiB",
        f"{row['plateauRss'] / MIB:.0f} MiB",
        f"{row.get('peakRss', row['plateauRss']) / MIB:.0f} MiB",
        f"**{row['rssPerStream'] / KIB:.0f} KiB**",
        f"{row['cpuPerStream'] * 1000:.0f} ms",
        f"{row['cpu']:.0f} / {other.get('emulator', 0):.0f} / "
        f"{other.get('standin', 0):.0f} / {other.get('client', 0):.0f}",
        _writes(row),
        str(row["peakThreads"]),
    ]


def load_section(r: dict[str, Any]) -> str:
    rows = []
    any_row: dict[str, Any] | None = None
    for level in r["load"]:
        for impl in ("ours", "predecessor"):
            row = level.get(impl)
            if not _ok(row):
                failed = (row or {}).get("failed", "not run")
                rows.append(
                    [str(level["streams"]), impl, f"failed: {one_line(failed, 120)}", *["-"] * 10]
                )
                continue
            assert row is not None
            any_row = row
            rows.append(_load_row(impl, row))
    if any_row is None:
        return "### Concurrent streams\nNo row completed."
    plan = r["plan"]["load"]
    return (
        f"### Concurrent streams on one instance: ours ({r.get('workers', '?')} workers) and the "
        f"predecessor (one Node process)\n"
        f"Each stream: a new conversation, {plan['chunks']} chunks {plan['delay_ms']} ms apart "
        f"({any_row['streamSeconds']:.1f} s), streams started evenly over "
        f"{any_row['ramp']:.1f} s; a fresh instance for every row.\n\n"
        + table(
            [
                "streams",
                "server",
                "errors",
                "wall",
                "first text p50 / p99 ms",
                "idle RSS",
                "plateau RSS",
                "peak RSS",
                "RSS / stream",
                "CPU / stream",
                "CPU s: server / emulator / stand-in / client",
                "Firestore write RPCs: rate; count: latency p50 / p99 / max",
                "threads",
            ],
            rows,
        )
    )


# Cold start --------------------------------------------------------------------------------


def cold_headline(r: dict[str, Any]) -> list[list[str]]:
    name, cold = next(iter(r["coldStart"].items()))
    return [
        [
            f"cold start: spawn -> first streamed byte ({name})",
            f"{cold['firstByte'] * 1000:.0f} ms",
            "-",
            "<= 1500 ms",
            met(cold["firstByte"] <= 1.5),
        ]
    ]


def cold_section(r: dict[str, Any]) -> str:
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
    return (
        f"### Cold start (AUTH_MODE=firebase, {r.get('workers', '?')} workers, as deployed)\n"
        "Deployed dependencies = the dev venv with aiohttp, h2 and pygments hidden "
        "(bench/deployed_site): google-genai imports aiohttp only when it is installed, and "
        "functions/requirements.txt does not install it.\n\n"
        + table(["figure", "median", "all runs (ms)"], rows)
        + f"\n\nImport self time by package, {first_name} (ms, `-X importtime`): {top}"
    )


MEMORY_LIMIT = 512 * 2**20  # issue 21: the flood keeps an instance of two workers under it


def memory_headline(r: dict[str, Any]) -> list[list[str]]:
    m = r["memory"]
    peak = max(x["peakRss"] for x in m["rounds"])
    whole = all(x["victimWhole"] for x in m["rounds"])
    return [
        [
            f"memory: {m['requests']} bodies of 14 MB at once from one account, peak RSS "
            f"({m['workers']} workers); another user's reply whole",
            f"{peak / 2**20:.0f} MiB; {'whole' if whole else 'NOT whole'}",
            "not flooded",
            "< 512 MiB; whole",
            met(peak < MEMORY_LIMIT and whole),
        ]
    ]


def memory_section(r: dict[str, Any]) -> str:
    m = r["memory"]
    rows = [
        [
            str(n),
            f"{x['idleRss'] / 2**20:.0f}",
            f"{x['peakRss'] / 2**20:.0f}",
            ", ".join(f"{k}: {v}" for k, v in x["statuses"].items()),
            f"{x['seconds']:.1f}",
            "yes" if x["victimWhole"] else "no",
        ]
        for n, x in enumerate(m["rounds"], 1)
    ]
    return (
        f"### Memory under a flood ({m['workers']} workers, THREADS 250, Firebase auth)\n"
        f"One account sends {m['requests']} bodies of about 14 MB at once, each refused only "
        "once read (stack/flood.py); another user's 40-chunk reply streams meanwhile. RSS is "
        "the whole process tree (master and workers), sampled every 20 ms. Answer 0 = the "
        "connection was closed while the body was sent.\n\n"
        + table(["flood", "idle MiB", "peak MiB", "answers", "seconds", "other reply whole"], rows)
    )


def telemetry_headline(r: dict[str, Any]) -> list[list[str]]:
    t = r["telemetry"]
    return [
        [
            "tracing every request (OTLP spans and metrics) vs no OTEL_*: first text p50, "
            "whole turn p50",
            f"+{t['firstOverheadP50Ms']} ms, +{t['totalOverheadP50Ms']} ms",
            "no tracing",
            "-",
            "-",
        ]
    ]


def telemetry_section(r: dict[str, Any]) -> str:
    t = r["telemetry"]
    rows = [
        [
            side,
            f"{t[side]['first']['p50']} / {t[side]['first']['p90']}",
            f"{t[side]['total']['p50']} / {t[side]['total']['p90']}",
        ]
        for side in ("off", "on")
    ]
    return (
        "### What tracing costs\n"
        f"Two functions side by side (deploy.sh's WORKERS each), {t['turns']} turns each, "
        "alternating: one with no OTEL_* setting (the SDK is not loaded), one tracing every "
        "request (`OTEL_TRACES_SAMPLER=always_on`) and exporting spans and metrics over "
        f"OTLP/HTTP to a local collector ({t['exports']} exports, {t['exportBytes']} bytes). "
        "Times in ms, as the client sees them.\n\n"
        + table(["OTEL", "first text p50 / p90", "whole turn p50 / p90"], rows)
    )
