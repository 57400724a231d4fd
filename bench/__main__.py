"""Runs every benchmark phase and prints the tables: `python -m bench [--quick] [--out DIR]`.

Phases (each against real local services, the function under functions-framework/gunicorn, and
beside it the predecessor's route, bench/predecessor/server.mjs, against the same stand-in):
1. first text chunk through the function vs straight from the stand-in, by stored history (the
   predecessor gets that history in the request body, as useChat sends it);
2. relay delay per chunk, stand-in emit -> client arrival, through a timestamping tap;
3. concurrent streams on one instance (a load client in its own process), both implementations;
4. Firestore reads/writes per turn (an instrumented entry point; no timing taken there);
5. cold start: import time of main.py, process spawn -> first streamed byte.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import seed, standin_control
from .client import FUNCTION_TEXT, STANDIN_TEXT, chat_body, history_body, request_bytes, stream
from .report import render
from .services import (
    PROJECT,
    ROOT,
    Sample,
    Service,
    free_port,
    function_command,
    function_env,
    gunicorn_pids,
    remember_group,
    sample_tree,
    spawn,
    start_firestore_emulator,
    start_function,
    start_predecessor,
    start_standin,
)
from .stats import ms, percentile
from .tap import Tap

STEP = "ideate"


@dataclass(frozen=True)
class Plan:
    histories: tuple[int, ...]
    conversations: int  # per history size: each gives one cold-cache sample
    warm_samples: int  # per history size, round-robin over the conversations
    relay_streams: int
    relay_chunks: int
    relay_delay_ms: int
    load_levels: tuple[int, ...]
    load_chunks: int
    load_delay_ms: int
    load_checkpoint_s: float  # CHECKPOINT_SECONDS for the load phase (production: 1 s)
    cold_spawns: int
    import_repeats: int


FULL = Plan((0, 50, 200), 40, 200, 20, 20, 50, (100, 500, 1000), 12, 400, 1.0, 5, 5)
QUICK = Plan((0, 50, 200), 6, 30, 5, 20, 50, (50, 200), 12, 400, 1.0, 2, 3)
DEFAULT_WORKERS = 2
IMPLEMENTATIONS = ("ours", "predecessor")


def load_threads(largest: int, workers: int) -> int:
    """THREADS per worker in the load phase: an even share of the largest level, plus a quarter.

    The same for every row, so WORKERS x THREADS covers the largest level. gunicorn's workers
    take connections from one listening socket, and the split is uneven: a gthread worker whose
    threads are all busy still accepts (up to worker_connections), and the extra streams wait
    silently for a thread. The load table shows the split. gthread starts threads only as they
    are needed, so unused headroom costs nothing.
    """
    share = math.ceil(largest / workers)
    return share + math.ceil(share / 4)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def system_prompt() -> str:
    """The prompt our function sends for STEP; "" (and a warning) if functions/ cannot say."""
    sys.path.insert(0, str(ROOT / "functions"))
    try:
        from workshop_chat.prompts import system_prompt as prompt

        return prompt(STEP)
    except Exception as exc:  # noqa: BLE001 - functions/ may be mid-change; measure anyway
        log(f"warning: no system prompt from functions/ ({type(exc).__name__}: {exc})")
        return ""


class Bench:
    def __init__(
        self,
        plan: Plan,
        run_dir: Path,
        quick: bool,
        extra_env: dict[str, str],
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.plan = plan
        self.extra_env = extra_env
        self.run_dir = run_dir
        self.quick = quick
        self.workers = workers
        self.services: list[Service] = []
        self.results: dict[str, Any] = {"workers": workers, "failures": {}}
        self.emulator: Service | None = None
        self.standin: Service | None = None
        self.system = ""
        self.prompts_file = run_dir / "predecessor-prompts.json"

    # Services --------------------------------------------------------------------------

    def env(self, threads: int, **extra: str) -> dict[str, str]:
        assert self.emulator is not None and self.standin is not None
        return {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": self.emulator.url,
            "GOOGLE_GEMINI_BASE_URL": self.standin.url,
            "GEMINI_API_KEY": "standin",
            "GOOGLE_GENAI_USE_VERTEXAI": "",
            "K_SERVICE": "",
            "FIREBASE_AUTH_EMULATOR_HOST": "",
            "AUTH_MODE": "none",
            "RATE_LIMIT_PER_MINUTE": "0",
            "THREADS": str(threads),
            "LOG_LEVEL": "INFO",
            **self.extra_env,
            **extra,
        }

    def start_function(self, threads: int, name: str = "function", **extra: Any) -> Service:
        source = extra.pop("source", None)
        service = start_function(self.run_dir, self.env(threads, **extra), name, source)
        self.services.append(service)
        return service

    def start_predecessor(self, name: str, gemini_url: str | None = None) -> Service:
        """The predecessor's Node route, against the stand-in (or a tap in front of it)."""
        assert self.standin is not None
        url = gemini_url or self.standin.url
        service = start_predecessor(self.run_dir, url, name, self.prompts_file)
        self.services.append(service)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    # 1. First text chunk by history size ------------------------------------------------

    async def first_chunk(self) -> None:
        """Ours, straight from the stand-in, the predecessor: one turn each, interleaved."""
        plan = self.plan
        assert self.standin is not None and self.emulator is not None
        fn = self.start_ours_or_none(1000, "ttfc")
        pred = self.start_predecessor("ttfc-predecessor")
        fn_port = int(fn.url.rsplit(":", 1)[1]) if fn else 0
        pred_port = int(pred.url.rsplit(":", 1)[1])
        sp_port = int(self.standin.url.rsplit(":", 1)[1])
        standin_control.configure(self.standin.url, chunks=3)
        db = seed.client(self.emulator.url)
        run = uuid.uuid4().hex[:6]
        text = "How do we turn these interview notes into a point of view?"

        ours = {"alive": fn is not None}

        async def fn_turn(session: str, message: str) -> float | None:
            """Our turn; after a failure ours is left out and the predecessor still measured."""
            if not ours["alive"]:
                return None
            raw = request_bytes(
                "127.0.0.1", fn_port, "/", chat_body(session, STEP, message, text), {}
            )
            s = await stream("127.0.0.1", fn_port, raw, FUNCTION_TEXT, 30)
            if not (s.ok and s.done):
                failure = f"turn failed: status={s.status} error={s.error} {s.detail}"
                log(f"first chunk, ours: {failure}; measuring the predecessor only")
                self.results["failures"]["first-chunk (ours)"] = failure
                ours["alive"] = False
                return None
            return s.ttfc

        async def pred_turn(session: str, history: int, message: str) -> float | None:
            # useChat sends the whole conversation: the route has nowhere else to get it from.
            body = history_body(session, STEP, seed.ui_messages(history, message, text))
            raw = request_bytes("127.0.0.1", pred_port, "/", body, {})
            s = await stream("127.0.0.1", pred_port, raw, FUNCTION_TEXT, 30)
            if not (s.ok and s.done):
                raise RuntimeError(
                    f"predecessor turn failed: status={s.status} error={s.error} {s.detail}"
                )
            return s.ttfc

        async def direct(history: int) -> float | None:
            body = standin_control.model_body(self.system, seed.gemini_contents(history, text))
            raw = request_bytes(
                "127.0.0.1", sp_port, standin_control.MODEL_PATH, body, {"x-goog-api-key": "k"}
            )
            s = await stream("127.0.0.1", sp_port, raw, STANDIN_TEXT, 30)
            if s.status != 200 or s.ttfc is None:
                raise RuntimeError(f"stand-in failed: status={s.status} error={s.error}")
            return s.ttfc

        for i in range(5):  # warm both: pools, gRPC channel, lazy imports, V8's JIT
            await fn_turn(f"warm-{run}-{i}", f"w{i}")
            await direct(0)
            await pred_turn(f"warm-p-{run}-{i}", 2 * i, f"w{i}")
        rows = []
        for history in plan.histories:
            sessions = [f"h{history}-{run}-{c}" for c in range(plan.conversations)]
            if history and fn is not None:
                log(f"seeding {len(sessions)} conversations of {history} messages")
                for session in sessions:
                    seed.seed_conversation(db, session, STEP, history)
            cold, cold_direct, warm, warm_direct, theirs = [], [], [], [], []
            turn = 0
            if history and fn is not None:
                for session in sessions:  # the instance has never seen these: cold cache
                    if (ttfc := await fn_turn(session, f"t{turn}")) is not None:
                        cold.append(ttfc)
                        cold_direct.append(await direct(history))
                    turn += 1
            for i in range(plan.warm_samples):
                # No stored message means a new conversation every time.
                session = sessions[i % len(sessions)] if history else f"h0-{run}-{i}"
                if (ttfc := await fn_turn(session, f"t{turn}")) is not None:
                    warm.append(ttfc)
                warm_direct.append(await direct(history))
                theirs.append(await pred_turn(f"p-{session}", history, f"t{turn}"))
                turn += 1
            grown = history + 2 * -(-plan.warm_samples // len(sessions)) if history else 0
            rows.append(
                {
                    "history": history,
                    "historyAtEnd": grown,
                    "warm": warm,
                    "warmDirect": warm_direct,
                    "cold": cold,
                    "coldDirect": cold_direct,
                    "predecessor": theirs,
                }
            )
            log(
                f"history {history}: warm fn p50 {ms(percentile(warm, 50))} ms, "
                f"direct p50 {ms(percentile(warm_direct, 50))} ms, "
                f"predecessor p50 {ms(percentile(theirs, 50))} ms"
            )
        self.results["firstChunk"] = rows
        if fn is not None:
            self.stop(fn)
        self.stop(pred)

    def start_ours_or_none(self, threads: int, name: str, **extra: Any) -> Service | None:
        """Our function, or None (and the failure recorded) when it does not start: the
        predecessor's side of a phase is still measured while functions/ is being changed."""
        try:
            return self.start_function(threads, name, **extra)
        except RuntimeError as exc:
            log(f"our function did not start ({name}); measuring the predecessor only")
            self.results["failures"][name] = str(exc)[-2000:]
            return None

    # 2. Relay delay per chunk -----------------------------------------------------------

    async def relay(self) -> None:
        """The same tap in front of the stand-in for both: each one's Gemini base URL is the tap."""
        plan = self.plan
        assert self.standin is not None
        host, port = self.standin.url.removeprefix("http://").rsplit(":", 1)
        tap = Tap(host, int(port))
        await tap.start()
        tap_url = f"http://127.0.0.1:{tap.port}"
        standin_control.configure(
            self.standin.url, chunks=plan.relay_chunks, delay_ms=plan.relay_delay_ms, words=60
        )
        results: dict[str, Any] = {"chunks": plan.relay_chunks, "delayMs": plan.relay_delay_ms}
        fn = self.start_ours_or_none(1000, "relay", GOOGLE_GEMINI_BASE_URL=tap_url)
        if fn is not None:
            try:
                results |= await self.relay_streams(fn, tap, "ours")
            except RuntimeError as exc:  # the predecessor is still measured
                log(f"relay, ours: {exc}")
                self.results["failures"]["relay (ours)"] = str(exc)[-2000:]
            self.stop(fn)
        pred = self.start_predecessor("relay-predecessor", tap_url)
        results["predecessor"] = await self.relay_streams(pred, tap, "predecessor")
        self.stop(pred)
        await tap.close()
        self.results["relay"] = results

    async def relay_streams(self, service: Service, tap: Tap, label: str) -> dict[str, Any]:
        port = int(service.url.rsplit(":", 1)[1])
        run = uuid.uuid4().hex[:6]
        delays: list[float] = []
        gaps: list[float] = []
        per_stream = []
        for i in range(self.plan.relay_streams + 2):
            tap.emits.clear()
            body = chat_body(f"relay-{run}-{i}", STEP, f"r{i}", "relay me")
            raw = request_bytes("127.0.0.1", port, "/", body, {})
            s = await stream("127.0.0.1", port, raw, FUNCTION_TEXT, 30)
            if not (s.ok and s.done):
                raise RuntimeError(
                    f"{label}: relay stream failed: status={s.status} error={s.error} {s.detail}"
                )
            if i < 2:
                continue  # warm-up
            emits = list(tap.emits)
            if len(emits) != len(s.texts):
                raise RuntimeError(
                    f"{label}: {len(emits)} chunks emitted but {len(s.texts)} received"
                )
            delays += [t - e for t, e in zip(s.texts, emits, strict=True)]
            gaps += [b - a for a, b in zip(s.texts, s.texts[1:], strict=False)]
            per_stream.append({"chunks": s.text_count, "reads": s.text_reads})
        log(
            f"relay, {label}: p50 {ms(percentile(delays, 50), 2)} ms "
            f"p99 {ms(percentile(delays, 99), 2)} ms"
        )
        return {"delays": delays, "gaps": gaps, "streams": per_stream}

    # 3. Concurrent streams --------------------------------------------------------------

    def load_level(self, streams: int) -> dict[str, Any]:
        """One row: a fresh instance of ours, then a fresh predecessor, the same load on each."""
        row: dict[str, Any] = {"streams": streams}
        for impl in IMPLEMENTATIONS:
            try:
                row[impl] = self.load(streams, impl)
            except Exception as exc:  # noqa: BLE001 - one side failing must not hide the other
                log(f"{streams} streams, {impl}: failed: {exc}")
                row[impl] = {"failed": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
        return row

    def start_load_target(self, streams: int, impl: str) -> tuple[Service, list[int], Path | None]:
        """The instance under load, the pids whose RSS and CPU count, and where counts land."""
        if impl == "predecessor":
            service = self.start_predecessor(f"load{streams}-predecessor")
            return service, [service.pid], None
        threads = load_threads(max(self.plan.load_levels), self.workers)
        counts = self.run_dir / f"counts-load{streams}"
        counts.mkdir(exist_ok=True)
        extra: dict[str, Any] = {
            "WORKERS": str(self.workers),
            "CHECKPOINT_SECONDS": f"{self.plan.load_checkpoint_s:g}",
            "BENCH_COUNTS_DIR": str(counts),
        }
        try:
            # The counting entry point: Commit/BatchWrite RPCs and their latency show whether
            # the emulator's write rate bounds the row.
            service = self.start_function(
                threads, f"load{streams}", source=ROOT / "bench" / "counting_main.py", **extra
            )
        except RuntimeError as exc:
            log(f"counting entry point failed ({str(exc)[-300:]}); load runs functions/main.py")
            service = self.start_function(threads, f"load{streams}", **extra)
            counts = None
        return service, gunicorn_pids(service, self.workers), counts

    def load(self, streams: int, impl: str) -> dict[str, Any]:
        fn, pids, counts_dir = self.start_load_target(streams, impl)
        try:
            return self.load_on(fn, pids, counts_dir, streams, impl)
        finally:
            self.stop(fn)

    def warm_up(self, port: int, workers: int, counts_dir: Path | None) -> None:
        """A few overlapping turns, repeated until every worker has served some (when counted):
        a worker's first turns build its clients and channels, which no row should time."""
        assert self.standin is not None
        standin_control.configure(self.standin.url, chunks=3, delay_ms=100)
        for _ in range(5):
            warm = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.load",
                    "--port",
                    str(port),
                    "--streams",
                    str(5 * workers),
                    "--ramp",
                    "0.2",
                ],
                capture_output=True,
                timeout=60,
                cwd=ROOT,
                check=True,
            )
            if any(not r["done"] for r in json.loads(warm.stdout)):
                raise RuntimeError(f"warm-up turns failed: {warm.stdout[:500]!r}")
            if counts_dir is None or workers == 1:
                return
            time.sleep(1.2)  # the workers write their counts once a second
            served = worker_requests(counts_dir)
            if len(served) >= workers and all(served.values()):
                return
        log(f"warning: warm-up reached {len(worker_requests(counts_dir))} of {workers} workers")

    def load_on(
        self, fn: Service, pids: list[int], counts_dir: Path | None, streams: int, impl: str
    ) -> dict[str, Any]:
        plan = self.plan
        assert self.standin is not None and self.emulator is not None
        port = int(fn.url.rsplit(":", 1)[1])
        self.warm_up(port, len(pids) - 1 if impl == "ours" else 1, counts_dir)
        time.sleep(1.0)
        idle = [sample_tree(pids) for _ in range(4) if time.sleep(0.1) is None]
        idle_rss = statistics.median(s.rss for s in idle)
        counts_before = read_counts(counts_dir)
        split_before = worker_requests(counts_dir)
        standin_control.configure(
            self.standin.url,
            chunks=plan.load_chunks,
            delay_ms=plan.load_delay_ms,
            words=plan.load_chunks * 2,
        )
        stream_seconds = (plan.load_chunks - 1) * plan.load_delay_ms / 1000
        # Arrivals spread over half a stream's life, so that every stream is open for the
        # second half: at 1000 streams of 4.4 s, ~450 new streams a second.
        ramp = max(2.0, stream_seconds / 2)
        timeout = stream_seconds + ramp + 60
        log(f"{streams} streams of {stream_seconds:.1f} s, ramp {ramp:.1f} s, {impl}")
        out = self.run_dir / f"load{streams}-{impl}.json"
        others = {"emulator": [self.emulator.pid], "standin": [self.standin.pid]}
        others_before = {k: sample_tree(v).cpu for k, v in others.items()}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(out, "wb") as sink:
            client = subprocess.Popen(
                [
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
                    str(stream_seconds + 60),
                ],
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
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        other_cpu = {k: sample_tree(v).cpu - others_before[k] for k, v in others.items()}
        other_cpu["client"] = (children_after.ru_utime + children_after.ru_stime) - (
            children_before.ru_utime + children_before.ru_stime
        )
        if counts_dir is not None:
            time.sleep(1.2)  # every worker writes its counts once a second
        firestore = count_difference(read_counts(counts_dir), counts_before)
        results = json.loads(out.read_text())
        ok = [r for r in results if r["status"] == 200 and r["done"] and not r["errorEvent"]]
        short = [r for r in ok if r["texts"] != plan.load_chunks]
        errors = len(results) - len(ok) + len(short)
        ttfc = [r["firstText"] - r["sent"] for r in results if r["firstText"] is not None]
        all_open = max(r["firstText"] or r["sent"] for r in results)
        first_end = min(r["ended"] for r in results)
        plateau = [s for s in samples if all_open <= s.at <= first_end]
        plateau_rss = max((s.rss for s in plateau), default=max(s.rss for s in samples))
        cpu = samples[-1].cpu - samples[0].cpu
        kinds: dict[str, int] = {}
        for r in results:
            if r not in ok:
                key = r["error"] or error_kind(r)
                kinds[key] = kinds.get(key, 0) + 1
        if short:
            kinds["short stream"] = len(short)
        wall = max(r["ended"] for r in results) - min(r["sent"] for r in results)
        row = {
            "impl": impl,
            "streams": streams,
            "checkpointSeconds": plan.load_checkpoint_s if impl == "ours" else None,
            "workers": self.workers if impl == "ours" else 1,
            "threads": load_threads(max(plan.load_levels), self.workers)
            if impl == "ours"
            else None,
            "perWorker": per_worker(counts_dir, split_before),
            "errors": errors,
            "errorKinds": kinds,
            "ttfcP50": percentile(ttfc, 50),
            "ttfcP99": percentile(ttfc, 99),
            "idleRss": idle_rss,
            "plateauRss": plateau_rss,
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
            f"{ms(row['ttfcP99'])} ms, {row['rssPerStream'] / 1024:.0f} KiB/stream, "
            f"{row['cpuPerStream'] * 1000:.0f} ms CPU/stream"
            + (f", {firestore.get('commits', 0)} commits" if counts_dir is not None else "")
        )
        return row

    # 4. Firestore traffic per turn ------------------------------------------------------

    async def firestore_counts(self) -> None:
        assert self.standin is not None and self.emulator is not None
        fn = self.start_function(
            1000, "counting", source=ROOT / "bench" / "counting_main.py", LOG_LEVEL="WARNING"
        )
        port = int(fn.url.rsplit(":", 1)[1])
        standin_control.configure(self.standin.url, chunks=3)
        db = seed.client(self.emulator.url)
        run = uuid.uuid4().hex[:6]

        def stats() -> dict[str, int]:
            with socket.create_connection(("127.0.0.1", port), 10) as sock:
                sock.sendall(b"GET /_bench/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            return json.loads(data.split(b"\r\n\r\n", 1)[1])

        async def turn(session: str, message: str) -> dict[str, int]:
            before = stats()
            body = chat_body(session, STEP, message, "count my reads")
            raw = request_bytes("127.0.0.1", port, "/", body, {})
            s = await stream("127.0.0.1", port, raw, FUNCTION_TEXT, 30)
            if not (s.ok and s.done):
                raise RuntimeError("counting turn failed")
            after = stats()
            return {k: v - before.get(k, 0) for k, v in after.items() if not isinstance(v, dict)}

        await turn(f"count-warm-{run}", "w")
        rows = []
        for history in self.plan.histories:
            session = f"count-{history}-{run}"
            if history:
                seed.seed_conversation(db, session, STEP, history)
            first = await turn(session, "c0")
            warm = [await turn(session, f"c{i}") for i in range(1, 4)]
            rows.append({"history": history, "cold": first, "warm": warm})
        self.results["firestore"] = rows
        self.stop(fn)

    # 5. Cold start ---------------------------------------------------------------------

    def cold_env(self, port: int, deployed: bool) -> dict[str, str]:
        """As deployed: AUTH_MODE=firebase (tokens from the Auth emulator stand-in address)."""
        env = self.env(1000, AUTH_MODE="firebase", FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9")
        if deployed:
            env["PYTHONPATH"] = str(DEPLOYED_SITE)
        return function_env(self.run_dir, port, env)

    def import_time(self, deployed: bool) -> dict[str, Any]:
        env = self.cold_env(0, deployed)
        code = (
            "import time,sys; t=time.perf_counter(); c=time.process_time(); import main; "
            "sys.stderr.write('IMPORT %f %f\\n' % (time.perf_counter()-t, time.process_time()-c))"
        )
        walls, cpus = [], []
        for _ in range(self.plan.import_repeats):
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT / "functions",
                env=env,
                capture_output=True,
                timeout=60,
                check=True,
            )
            wall, cpu = done.stderr.decode().rsplit("IMPORT ", 1)[1].split()
            walls.append(float(wall))
            cpus.append(float(cpu))
        profile = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import main"],
            cwd=ROOT / "functions",
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return {
            "median": statistics.median(walls),
            "cpu": statistics.median(cpus),
            "all": walls,
            "top": top_imports(profile),
        }

    async def spawn_to_first_byte(self, deployed: bool, count: int) -> dict[str, Any]:
        assert self.standin is not None
        standin_control.configure(self.standin.url, chunks=3)
        runs = []
        for i in range(count):
            port = free_port()
            token = unsigned_token(f"cold-user-{i}")
            body = chat_body(f"cold-{uuid.uuid4().hex[:6]}-{i}", STEP, "m0", "cold start")
            raw = request_bytes("127.0.0.1", port, "/", body, {"Authorization": f"Bearer {token}"})
            log_file = self.run_dir / f"cold-{i}.log"
            spawned = time.monotonic()
            process = spawn(
                "cold",
                function_command(port, ROOT / "functions" / "main.py"),
                log_file,
                env=self.cold_env(port, deployed),
                cwd=ROOT / "functions",
            )
            service = Service("cold", process, f"http://127.0.0.1:{port}", log_file)
            self.services.append(service)
            try:
                bound = None
                deadline = spawned + 30
                while time.monotonic() < deadline:  # the master binds before the worker imports
                    with socket.socket() as probe:
                        if probe.connect_ex(("127.0.0.1", port)) == 0:
                            bound = time.monotonic()
                            break
                    if process.poll() is not None:
                        raise RuntimeError(f"cold instance exited:\n{service.tail()}")
                    time.sleep(0.002)
                if bound is None:
                    raise RuntimeError("cold instance never listened")
                s = await stream("127.0.0.1", port, raw, FUNCTION_TEXT, 30)
                if not (s.ok and s.done) or s.first_byte is None or s.first_text is None:
                    raise RuntimeError(f"cold turn failed: {s.status} {s.error}\n{service.tail()}")
                runs.append(
                    {
                        "listening": bound - spawned,
                        "firstByte": s.first_byte - spawned,
                        "firstText": s.first_text - spawned,
                        "turnTtfc": s.first_text - s.sent,
                    }
                )
            finally:
                self.stop(service)
        return {
            "runs": runs,
            **{
                k: statistics.median(r[k] for r in runs)
                for k in ("listening", "firstByte", "firstText", "turnTtfc")
            },
        }

    # Driver ------------------------------------------------------------------------------

    def warm_emulator(self) -> None:
        """A fresh emulator answers its first few hundred requests slowly (JIT): warm it."""
        assert self.emulator is not None
        db = seed.client(self.emulator.url)
        for i in range(30):
            seed.seed_conversation(db, f"warmup-{i}", STEP, 10)
            list(db.collection("sessions").document(f"warmup-{i}").collection("steps").stream())
            db.collection("sessions").document(f"warmup-{i}").get()

    def run(self, phases: list[str]) -> None:
        started = time.monotonic()
        log(
            f"mode {'quick' if self.quick else 'full'}; WORKERS={self.workers} under load; "
            f"logs in {self.run_dir}"
        )
        self.results["loadBefore"] = os.getloadavg()
        self.results["busyBefore"] = machine_busy()
        self.system = system_prompt()
        self.prompts_file.write_text(json.dumps({STEP: self.system}))
        self.emulator = start_firestore_emulator(self.run_dir)
        self.services.append(self.emulator)
        self.standin = start_standin(self.run_dir)
        self.services.append(self.standin)
        log(f"emulator {self.emulator.url}, stand-in {self.standin.url}; warming the emulator")
        self.warm_emulator()
        if "cold" in phases:
            self.phase("cold", self.cold)
        if "first-chunk" in phases:
            log("first text chunk by stored history: ours, stand-in direct, predecessor")
            self.phase("first-chunk", lambda: asyncio.run(self.first_chunk()))
        if "relay" in phases:
            log("relay delay per chunk: ours, then the predecessor")
            self.phase("relay", lambda: asyncio.run(self.relay()))
        if "firestore" in phases:
            log("Firestore traffic per turn")
            self.phase("firestore", lambda: asyncio.run(self.firestore_counts()))
        if "load" in phases:
            self.results["load"] = [self.load_level(n) for n in self.plan.load_levels]
        self.results["seconds"] = time.monotonic() - started
        self.results["loadAfter"] = os.getloadavg()

    def phase(self, name: str, body: Any) -> None:
        """Run one phase; a failure is logged and reported, and the next phase still runs."""
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - e.g. functions/ mid-change: keep measuring
            log(f"phase {name} failed: {type(exc).__name__}: {str(exc)[-500:]}")
            self.results["failures"][name] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
        finally:
            for service in [s for s in self.services if s not in (self.emulator, self.standin)]:
                self.stop(service)

    def cold(self) -> None:
        log("cold start: import time")
        self.results["import"] = {
            name: self.import_time(deployed) for name, deployed in COLD_VARIANTS
        }
        log("cold start: spawn -> first byte")
        self.results["coldStart"] = {
            name: asyncio.run(self.spawn_to_first_byte(deployed, runs))
            for (name, deployed), runs in zip(
                COLD_VARIANTS,
                (self.plan.cold_spawns, max(1, self.plan.cold_spawns // 2)),
                strict=True,
            )
        }


PHASES = ("cold", "first-chunk", "relay", "firestore", "load")
# (label, hide packages the deployed function does not have)
COLD_VARIANTS = (("deployed dependencies", True), ("dev venv", False))
DEPLOYED_SITE = ROOT / "bench" / "deployed_site"


def machine_busy(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over a short window, before anything of ours runs."""

    def read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = read()
    time.sleep(seconds)
    busy1, total1 = read()
    return (busy1 - busy0) / max(1, total1 - total0)


def read_counts(folder: Path | None) -> dict[str, Any]:
    """The Firestore counts every worker of the counting entry point wrote, summed."""
    total: dict[str, Any] = {}
    if folder is None:
        return total
    for path in folder.glob("*.json"):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # os.replace makes this rare: a file from a worker that never finished
        for key, value in counts.items():
            if isinstance(value, dict):
                bucket = total.setdefault(key, {})
                for k, v in value.items():
                    bucket[k] = bucket.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return total


def worker_requests(folder: Path | None) -> dict[str, int]:
    """Requests each worker of the counting entry point has served, by pid."""
    split: dict[str, int] = {}
    for path in folder.glob("*.json") if folder is not None else []:
        try:
            split[path.stem] = json.loads(path.read_text()).get("requests", 0)
        except (OSError, ValueError):
            continue
    return split


def per_worker(folder: Path | None, before: dict[str, int]) -> list[int] | None:
    """How the load's streams were split across the workers, largest share first."""
    if folder is None:
        return None
    after = worker_requests(folder)
    return sorted((n - before.get(pid, 0) for pid, n in after.items()), reverse=True)


def count_difference(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What happened between two `read_counts`; latency histograms become p50/p99/max in ms."""
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


def error_kind(result: dict[str, Any]) -> str:
    """`503 storage_unavailable`, or the error event's text, for the report."""
    detail = result.get("detail") or ""
    if result["status"] != 200:
        code = re.search(r'"code":"([^"]+)"', detail)
        return f"{result['status']} {code.group(1) if code else detail[:40]}"
    text = re.search(r'"errorText":"([^"]+)"', detail)
    return f"error event: {text.group(1)[:48] if text else detail[:48]}"


def top_imports(profile: subprocess.CompletedProcess[bytes], count: int = 8) -> list[Any]:
    """Self time from `-X importtime` summed per package (google.* by its second name), in µs."""
    totals: dict[str, int] = {}
    for line in profile.stderr.decode(errors="replace").splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if not match:
            continue
        parts = match.group(2).split(".")
        name = ".".join(parts[:2]) if parts[0] == "google" and len(parts) > 1 else parts[0]
        totals[name] = totals.get(name, 0) + int(match.group(1))
    return sorted(totals.items(), key=lambda kv: -kv[1])[:count]


def unsigned_token(uid: str) -> str:
    """An `alg: none` ID token, which firebase-admin accepts only with the Auth emulator set."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": uid,
        "user_id": uid,
        "iat": now - 10,
        "auth_time": now - 10,
        "exp": now + 3600,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def node_version() -> str:
    try:
        done = subprocess.run(["node", "--version"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return done.stdout.decode().strip().removeprefix("v")


def machine() -> dict[str, str]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the chat function locally.")
    parser.add_argument("--quick", action="store_true", help="small counts, ~2-3 minutes")
    parser.add_argument("--out", type=Path, help="folder for logs, results.json and report.md")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every function instance (experiments; not for the table)",
    )
    parser.add_argument("--levels", help="comma-separated concurrent stream counts (load phase)")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"gunicorn WORKERS of our function in the load phase (default {DEFAULT_WORKERS}); "
        "THREADS is sized so that WORKERS x THREADS covers each level with headroom",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    phases = [p for p in args.only.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="workshop-chat-bench-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    plan = QUICK if args.quick else FULL
    if args.levels:
        plan = replace(plan, load_levels=tuple(int(n) for n in args.levels.split(",")))
    extra_env = dict(e.split("=", 1) for e in args.env)
    bench = Bench(plan, run_dir, args.quick, extra_env, args.workers)
    try:
        bench.run(phases)
    finally:
        bench.stop_all()
    results = {"machine": machine(), "mode": "quick" if args.quick else "full", "env": args.env}
    results |= {"plan": asdict(plan), **bench.results}
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = render(results)
    (run_dir / "report.md").write_text(text + "\n")
    print(text)
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
