"""Concurrent streams on one instance: ours (deploy.sh's WORKERS) against one Node process.

For each level a fresh instance of ours runs, then a fresh predecessor, never both under load at
once. The streams come from a load client in its own process (bench/load.py), so the client's
CPU does not count against either server; the instance's RSS and CPU are sampled from /proc.
"""

from __future__ import annotations

import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack import ROOT, Service, remember_group

from .. import counts, standin_control
from ..context import Run, log, port_of
from ..services import Sample, gunicorn_pids, sample_tree
from ..stats import ms, percentile


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    chunks: int
    delay_ms: int
    checkpoint_s: float  # CHECKPOINT_SECONDS (production: 1 s)


FULL = Plan(levels=(100, 500, 1000), chunks=12, delay_ms=400, checkpoint_s=1.0)
QUICK = Plan(levels=(50, 200), chunks=12, delay_ms=400, checkpoint_s=1.0)
IMPLEMENTATIONS = ("ours", "predecessor")


def threads_for(largest: int, workers: int) -> int:
    """THREADS per worker: an even share of the largest level, plus a quarter.

    The same for every row, so WORKERS x THREADS covers the largest level. gunicorn's workers
    take connections from one listening socket, and the split is uneven: a gthread worker whose
    threads are all busy still accepts (up to worker_connections), and the extra streams wait
    silently for a thread. The load table shows the split. gthread starts threads only as they
    are needed, so unused headroom costs nothing.
    """
    share = math.ceil(largest / workers)
    return share + math.ceil(share / 4)


def run(ctx: Run) -> None:
    plan: Plan = ctx.plans["load"]
    rows = []
    for streams in plan.levels:
        row: dict[str, Any] = {"streams": streams}
        for impl in IMPLEMENTATIONS:
            try:
                row[impl] = _level(ctx, plan, streams, impl)
            except Exception as exc:  # noqa: BLE001 - one side failing must not hide the other
                log(f"{streams} streams, {impl}: failed: {exc}")
                row[impl] = {"failed": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
        rows.append(row)
    ctx.results["load"] = rows


def _level(ctx: Run, plan: Plan, streams: int, impl: str) -> dict[str, Any]:
    if impl == "predecessor":
        service = ctx.start_predecessor(f"load{streams}-predecessor")
        pids, counts_dir = [service.pid], None
    else:
        counts_dir = ctx.run_dir / f"counts-load{streams}"
        service = ctx.start_counting(
            threads_for(max(plan.levels), ctx.workers),
            f"load{streams}",
            counts_dir,
            CHECKPOINT_SECONDS=f"{plan.checkpoint_s:g}",
        )
        pids = gunicorn_pids(service, ctx.workers)
    try:
        return _measure(ctx, plan, service, pids, counts_dir, streams, impl)
    finally:
        ctx.stop(service)


def _load_client(port: int, streams: int, ramp: float, timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.load",
        "--port",
        str(port),
        "--streams",
        str(streams),
        "--ramp",
        str(ramp),
        "--timeout",
        str(timeout),
    ]


def _warm_up(ctx: Run, port: int, workers: int, counts_dir: Path | None) -> None:
    """A few overlapping turns, repeated until every worker has served some (when counted):
    a worker's first turns build its clients and channels, which no row should time."""
    standin_control.configure(ctx.standin_url, chunks=3, delay_ms=100)
    for _ in range(5):
        warm = subprocess.run(
            _load_client(port, 5 * workers, 0.2, 60),
            capture_output=True,
            timeout=90,
            cwd=ROOT,
            check=True,
        )
        if any(not r["done"] for r in json.loads(warm.stdout)):
            raise RuntimeError(f"warm-up turns failed: {warm.stdout[:500]!r}")
        if counts_dir is None or workers == 1:
            return
        time.sleep(1.2)  # the workers write their counts once a second
        served = counts.worker_requests(counts_dir)
        if len(served) >= workers and all(served.values()):
            return
    log(f"warning: warm-up reached {len(counts.worker_requests(counts_dir))} of {workers} workers")


def _measure(
    ctx: Run,
    plan: Plan,
    fn: Service,
    pids: list[int],
    counts_dir: Path | None,
    streams: int,
    impl: str,
) -> dict[str, Any]:
    assert ctx.standin is not None and ctx.emulator is not None
    port = port_of(fn)
    _warm_up(ctx, port, len(pids) - 1 if impl == "ours" else 1, counts_dir)
    time.sleep(1.0)
    idle = [sample_tree(pids) for _ in range(4) if time.sleep(0.1) is None]
    idle_rss = statistics.median(s.rss for s in idle)
    counts_before = counts.totals(counts_dir)
    split_before = counts.worker_requests(counts_dir)
    standin_control.configure(
        ctx.standin_url, chunks=plan.chunks, delay_ms=plan.delay_ms, words=plan.chunks * 2
    )
    stream_seconds = (plan.chunks - 1) * plan.delay_ms / 1000
    # Arrivals spread over half a stream's life, so that every stream is open for the
    # second half: at 1000 streams of 4.4 s, ~450 new streams a second.
    ramp = max(2.0, stream_seconds / 2)
    log(f"{streams} streams of {stream_seconds:.1f} s, ramp {ramp:.1f} s, {impl}")
    out = ctx.run_dir / f"load{streams}-{impl}.json"
    others = {"emulator": [ctx.emulator.pid], "standin": [ctx.standin.pid]}
    others_before = {k: sample_tree(v).cpu for k, v in others.items()}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples = _run_client(out, port, streams, ramp, stream_seconds, pids)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    other_cpu = {k: sample_tree(v).cpu - others_before[k] for k, v in others.items()}
    other_cpu["client"] = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    if counts_dir is not None:
        time.sleep(1.2)  # every worker writes its counts once a second
    firestore = counts.difference(counts.totals(counts_dir), counts_before)
    results = json.loads(out.read_text())
    ok = [r for r in results if r["status"] == 200 and r["done"] and not r["errorEvent"]]
    short = [r for r in ok if r["texts"] != plan.chunks]
    errors = len(results) - len(ok) + len(short)
    ttfc = [r["firstText"] - r["sent"] for r in results if r["firstText"] is not None]
    all_open = max(r["firstText"] or r["sent"] for r in results)
    first_end = min(r["ended"] for r in results)
    plateau = [s for s in samples if all_open <= s.at <= first_end]
    peak_rss = max(s.rss for s in samples)
    plateau_rss = max((s.rss for s in plateau), default=peak_rss)
    cpu = samples[-1].cpu - samples[0].cpu
    kinds: dict[str, int] = {}
    for r in results:
        if r not in ok:
            key = r["error"] or _error_kind(r)
            kinds[key] = kinds.get(key, 0) + 1
    if short:
        kinds["short stream"] = len(short)
    wall = max(r["ended"] for r in results) - min(r["sent"] for r in results)
    ours = impl == "ours"
    row = {
        "impl": impl,
        "streams": streams,
        "checkpointSeconds": plan.checkpoint_s if ours else None,
        "workers": ctx.workers if ours else 1,
        "threads": threads_for(max(plan.levels), ctx.workers) if ours else None,
        "perWorker": counts.per_worker(counts_dir, split_before),
        "errors": errors,
        "errorKinds": kinds,
        "ttfcP50": percentile(ttfc, 50),
        "ttfcP99": percentile(ttfc, 99),
        "idleRss": idle_rss,
        "plateauRss": plateau_rss,
        "peakRss": peak_rss,
        "plateauSamples": len(plateau),
        "rssPerStream": (plateau_rss - idle_rss) / streams,
        "cpu": cpu,
        "cpuPerStream": cpu / streams,
        "otherCpu": other_cpu,
        "peakThreads": max(s.threads for s in samples),
        "streamSeconds": stream_seconds,
        "ramp": ramp,
        "wall": wall,
        "firestore": firestore if counts_dir is not None else None,
    }
    log(
        f"{streams} streams, {impl}: {errors} errors, wall {wall:.1f} s, ttfc p99 "
        f"{ms(row['ttfcP99'])} ms, {row['rssPerStream'] / 1024:.0f} KiB/stream, peak RSS "
        f"{peak_rss / 2**20:.0f} MiB, {row['cpuPerStream'] * 1000:.0f} ms CPU/stream"
        + (f", {firestore.get('commits', 0)} commits" if counts_dir is not None else "")
    )
    return row


def _run_client(
    out: Path, port: int, streams: int, ramp: float, stream_seconds: float, pids: list[int]
) -> list[Sample]:
    """Run the load client to its end, sampling the instance's RSS and CPU every 0.25 s."""
    timeout = stream_seconds + ramp + 60
    with open(out, "wb") as sink:
        client = subprocess.Popen(
            _load_client(port, streams, ramp, stream_seconds + 60),
            stdout=sink,
            cwd=ROOT,
            start_new_session=True,
        )
        remember_group(client.pid)
        samples: list[Sample] = [sample_tree(pids)]
        deadline = time.monotonic() + timeout + 30
        try:
            while client.poll() is None and time.monotonic() < deadline:
                time.sleep(0.25)
                samples.append(sample_tree(pids))
        finally:
            late = client.poll() is None
            if late:
                client.kill()
                client.wait(5)
        if late:
            raise RuntimeError("the load client did not finish in time")
    samples.append(sample_tree(pids))
    return samples


def _error_kind(result: dict[str, Any]) -> str:
    """`503 storage_unavailable`, or the error event's text, for the report."""
    detail = result.get("detail") or ""
    if result["status"] != 200:
        code = re.search(r'"code":"([^"]+)"', detail)
        return f"{result['status']} {code.group(1) if code else detail[:40]}"
    text = re.search(r'"errorText":"([^"]+)"', detail)
    return f"error event: {text.group(1)[:48] if text else detail[:48]}"
