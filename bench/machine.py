"""The machine a run took place on, and the production defaults the benchmark follows.

A latency figure means little without the load the machine carried at the time, so every report
states it; and the production setup (WORKERS, memory) is read from deploy.sh rather than copied,
so that a change there changes what the benchmark runs.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from datetime import UTC, datetime

from stack import ROOT

DEPLOY = ROOT / "deploy.sh"
FALLBACK_WORKERS = 2
FALLBACK_MEMORY_BYTES = 1 << 30


def _deploy_default(name: str) -> str | None:
    """The value of deploy.sh's `NAME=...` default line, or None when it cannot be read."""
    try:
        text = DEPLOY.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(rf"^{name}=([^\s#]+)", text, re.MULTILINE)
    return match.group(1) if match else None


def deploy_workers() -> int:
    """deploy.sh sets `WORKERS=$CPU`: its `CPU=` default is the production worker count."""
    value = _deploy_default("CPU")
    return int(value) if value and value.isdigit() and int(value) > 0 else FALLBACK_WORKERS


def deploy_memory_bytes() -> int:
    """deploy.sh's `MEMORY=` default (e.g. 1Gi): the ceiling an instance's RSS must stay under."""
    value = _deploy_default("MEMORY") or ""
    match = re.fullmatch(r"(\d+)(Gi|Mi)", value)
    if not match:
        return FALLBACK_MEMORY_BYTES
    return int(match.group(1)) << (30 if match.group(2) == "Gi" else 20)


def busy_share(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over a short window: other work on the machine skews every figure."""

    def read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = read()
    time.sleep(seconds)
    busy1, total1 = read()
    return (busy1 - busy0) / max(1, total1 - total0)


def node_version() -> str:
    try:
        done = subprocess.run(["node", "--version"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return done.stdout.decode().strip().removeprefix("v")


def describe() -> dict[str, str]:
    """CPU, cores, RAM, kernel and runtimes, for the report's header."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
