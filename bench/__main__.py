"""Runs the benchmark's phases and prints the report: `python -m bench [--quick] [--out DIR]`.

Phases (bench/phases/), each against real local services, beside the predecessor's route
(bench/predecessor/server.mjs) against the same stand-in:
- cold: import time of main.py, process spawn -> first streamed byte;
- production (the headline): two instances of ours with deploy.sh's WORKERS, conversations
  built by real turns at random over them, at a model time to first token of 0 and 300 ms:
  first-text overhead, Gemini and summary calls, Firestore reads and writes per turn;
- relay: delay per chunk, stand-in emit -> client arrival, through a timestamping tap;
- load: concurrent streams on one instance (a load client in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from . import machine
from .context import Run, log
from .phases import PHASES
from .report import render


def parse(argv: list[str] | None) -> argparse.Namespace:
    workers = machine.deploy_workers()
    parser = argparse.ArgumentParser(description="Benchmark the chat function locally.")
    parser.add_argument("--quick", action="store_true", help="small counts, a few minutes")
    parser.add_argument("--out", type=Path, help="folder for logs, results.json and report.md")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every function instance (experiments; the report says so)",
    )
    parser.add_argument("--levels", help="comma-separated concurrent stream counts (load phase)")
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"gunicorn WORKERS of every instance of ours (default {workers}: deploy.sh's CPU)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.phases = [p for p in args.only.split(",") if p]
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if bad := [e for e in args.env if "=" not in e]:
        parser.error(f"--env takes NAME=VALUE, not {bad[0]!r}")
    args.options = options(args, workers)
    return args


def options(args: argparse.Namespace, default_workers: int) -> list[str]:
    """The options that change what is measured, for the report's header."""
    out = []
    if args.quick:
        out.append("--quick")
    if set(args.phases) != set(PHASES):
        out.append(f"--only {','.join(args.phases)}")
    if args.levels:
        out.append(f"--levels {args.levels}")
    if args.workers != default_workers:
        out.append(f"--workers {args.workers}")
    out += [f"--env {e}" for e in args.env]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="workshop-chat-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    plans = {name: quick if args.quick else full for name, (_, full, quick) in PHASES.items()}
    if args.levels:
        plans["load"] = replace(plans["load"], levels=tuple(int(n) for n in args.levels.split(",")))
    extra_env = dict(e.split("=", 1) for e in args.env)
    ctx = Run(run_dir, args.quick, extra_env, args.workers, plans)
    started = time.monotonic()
    log(f"mode {'quick' if args.quick else 'full'}; WORKERS={args.workers}; logs in {run_dir}")
    ctx.results["loadBefore"] = os.getloadavg()
    ctx.results["busyBefore"] = machine.busy_share()
    try:
        ctx.start_shared()
        for name, (body, _, _) in PHASES.items():
            if name in args.phases:
                ctx.phase(name, body)
    finally:
        ctx.stop_all()
    ctx.results["seconds"] = time.monotonic() - started
    ctx.results["loadAfter"] = os.getloadavg()
    ctx.results["busyAfter"] = machine.busy_share()
    results: dict[str, Any] = {
        "machine": machine.describe(),
        "mode": "quick" if args.quick else "full",
        "options": args.options,
        "env": args.env,
        "deployMemory": machine.deploy_memory_bytes(),
        "plan": {name: asdict(plans[name]) for name in args.phases},
        **ctx.results,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = render(results)
    (run_dir / "report.md").write_text(text + "\n")
    print(text)
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
