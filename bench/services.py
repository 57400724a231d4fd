"""What only the benchmark starts and samples: the predecessor's route, and a process tree's
memory and CPU from /proc. The shared local services start from `stack` (the same module as the
tests' and dev.sh's); it also writes every group to bench.sh's $BENCH_PGID_FILE.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from stack import ROOT, Service, free_port, gunicorn_pids, rss_bytes, start

__all__ = ["gunicorn_pids", "sample_tree", "start_predecessor"]

PREDECESSOR = ROOT / "bench" / "predecessor"


def start_predecessor(
    run_dir: Path, gemini_base_url: str, name: str, prompts_file: Path | None = None
) -> Service:
    """The predecessor's route (bench/predecessor/server.mjs): one Node process, no storage.

    `gemini_base_url` is the stand-in's (or the tap's) address; @ai-sdk/google appends
    `/models/<model>:streamGenerateContent`, so the API version goes in here: the stand-in
    serves `/v1beta`, the SDK's default.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the predecessor runs on Node 20+")
    if not (PREDECESSOR / "node_modules").is_dir():
        raise RuntimeError("bench/predecessor/node_modules is missing: bench.sh runs npm ci there")
    port = free_port()
    log = run_dir / f"{name}-{port}.log"
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GEMINI_BASE_URL": f"{gemini_base_url}/v1beta",
        "GEMINI_API_KEY": "standin",
        "NODE_ENV": "production",
    }
    if prompts_file is not None:
        env["SYSTEM_PROMPTS_FILE"] = str(prompts_file)
    url = f"http://127.0.0.1:{port}"
    return start(
        name, [node, "server.mjs"], url, f"{url}/healthz", 30, log=log, env=env, cwd=PREDECESSOR
    )


# --- /proc: memory and CPU of a process tree ------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


@dataclass
class Sample:
    at: float
    rss: int
    cpu: float
    threads: int


def sample_tree(pids: list[int]) -> Sample:
    return Sample(
        time.monotonic(),
        sum(rss_bytes(p) for p in pids),
        sum(cpu_seconds(p) for p in pids),
        sum(threads(p) for p in pids),
    )
