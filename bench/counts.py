"""Firestore counts that the workers of bench/counting_main.py write to `BENCH_COUNTS_DIR`.

Each worker writes `<pid>.json` about once a second; an instance is a folder, and several
instances are several folders, so a figure for the whole production setup is a sum over folders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .stats import percentile

# Written per worker beside the totals: what each benchmark turn cost (see counting_main.py),
# while its response was open under its id, and after that under its id + AFTER.
BY_TURN = "byTurn"
AFTER = "+after"


def _files(folders: Iterable[Path | None]) -> list[tuple[str, dict[str, Any]]]:
    """(worker id, counts) for every readable file; a worker's id is `<folder>/<pid>`."""
    out = []
    for folder in folders:
        if folder is None:
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                out.append((f"{folder.name}/{path.stem}", json.loads(path.read_text())))
            except (OSError, ValueError):
                continue  # os.replace makes this rare: a file from a worker that never finished
    return out


def totals(*folders: Path | None) -> dict[str, Any]:
    """Every worker's counts summed; latency histograms (dict values) summed bucket by bucket."""
    total: dict[str, Any] = {}
    for _, counts in _files(folders):
        for key, value in counts.items():
            if key == BY_TURN:
                continue
            if isinstance(value, dict):
                bucket = total.setdefault(key, {})
                for k, v in value.items():
                    bucket[k] = bucket.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return total


def by_turn(*folders: Path | None) -> dict[str, dict[str, Any]]:
    """Per benchmark turn: its counts and the worker that served it (`worker`)."""
    turns: dict[str, dict[str, Any]] = {}
    for worker, counts in _files(folders):
        for turn, values in (counts.get(BY_TURN) or {}).items():
            row = turns.setdefault(turn, {})
            for key, value in values.items():
                row[key] = row.get(key, 0) + value
            if values.get("requests"):
                row["worker"] = worker
    return turns


def worker_requests(*folders: Path | None) -> dict[str, int]:
    """Requests each worker has served, by worker id."""
    return {worker: counts.get("requests", 0) for worker, counts in _files(folders)}


def per_worker(folder: Path | None, before: dict[str, int]) -> list[int] | None:
    """How a load's streams were split across the workers, largest share first."""
    if folder is None:
        return None
    after = worker_requests(folder)
    return sorted((n - before.get(worker, 0) for worker, n in after.items()), reverse=True)


def difference(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What happened between two `totals`; latency histograms become p50/p99/max in ms."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if not isinstance(value, dict):
            out[key] = value - before.get(key, 0)
            continue
        old = before.get(key, {})
        histogram = {int(k): v - old.get(k, 0) for k, v in value.items()}
        samples = sorted(k for k, v in histogram.items() for _ in range(v))
        name = key.removesuffix("_ms")
        out[f"{name}P50Ms"] = percentile(samples, 50)
        out[f"{name}P99Ms"] = percentile(samples, 99)
        out[f"{name}MaxMs"] = samples[-1] if samples else None
    return out
