"""What every phase shares: the shared services, how ours and the predecessor are started, and the
results being built.

The Firestore emulator and the Gemini stand-in run for the whole benchmark (a fresh emulator is
slow until warmed); each phase starts and stops its own instances of ours and of the
predecessor. A phase that fails is recorded and the next one still runs, because functions/ is
often mid-change while the benchmark is run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stack
from stack import PROJECT, ROOT, Service

from .services import start_predecessor

STEP = "ideate"
COUNTING_MAIN = ROOT / "bench" / "counting_main.py"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def port_of(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def system_prompt() -> str:
    """The prompt our function sends for STEP; "" (and a warning) if functions/ cannot say.

    The predecessor is given the same prompt, and the direct requests carry it too, so that all
    three send the model the same request.
    """
    sys.path.insert(0, str(ROOT / "functions"))
    try:
        from workshop_chat.chat.prompts import system_prompt as prompt

        return prompt(STEP)
    except Exception as exc:  # noqa: BLE001 - functions/ may be mid-change; measure anyway
        log(f"warning: no system prompt from functions/ ({type(exc).__name__}: {exc})")
        return ""


class Run:
    """One benchmark run: its folder, mode, options, services and results."""

    def __init__(
        self,
        run_dir: Path,
        quick: bool,
        extra_env: dict[str, str],
        workers: int,
        plans: dict[str, Any],
    ) -> None:
        self.run_dir = run_dir
        self.quick = quick
        self.extra_env = extra_env
        self.workers = workers
        self.plans = plans
        self.services: list[Service] = []
        self.results: dict[str, Any] = {"workers": workers, "failures": {}}
        self.emulator: Service | None = None
        self.standin: Service | None = None
        self.system = ""
        self.prompts_file = run_dir / "predecessor-prompts.json"

    # Shared services -------------------------------------------------------------------

    def start_shared(self) -> None:
        """The emulator and the stand-in every phase uses, the emulator warmed."""
        self.system = system_prompt()
        self.prompts_file.write_text(json.dumps({STEP: self.system}))
        self.emulator = stack.start_firestore_emulator(log=self.run_dir / "firestore.log")
        self.services.append(self.emulator)
        self.standin = stack.start_standin(log=self.run_dir / "standin.log")
        self.services.append(self.standin)
        log(f"emulator {self.emulator.url}, stand-in {self.standin.url}; warming the emulator")
        warm_emulator(self.emulator.url)

    @property
    def standin_url(self) -> str:
        assert self.standin is not None, "start_shared first"
        return self.standin.url

    # Instances of ours and of the predecessor --------------------------------------------

    def env(self, threads: int, **extra: str) -> dict[str, str]:
        """Our function's environment: local services, no auth, the rest at its defaults.

        The rate limits are off: the benchmark's single user sends hundreds of turns a minute
        into a few sessions.
        """
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
            "SESSION_RATE_LIMIT_PER_MINUTE": "0",
            # One local user runs every turn: budgets stay on (their reads and charges are
            # part of a turn), set beyond what a run spends.
            "USER_DAILY_TOKENS": str(10**12),
            "DAILY_TOKENS": str(10**13),
            "WORKERS": str(self.workers),
            "THREADS": str(threads),
            "LOG_LEVEL": "INFO",
            **self.extra_env,
            **extra,
        }

    def start_function(
        self, threads: int, name: str, source: Path | None = None, **extra: str
    ) -> Service:
        port = stack.free_port()
        log = self.run_dir / f"{name}-{port}.log"
        env = self.env(threads, **extra)
        service = stack.start_function(env, port, name=name, source=source, log=log)
        self.services.append(service)
        return service

    def start_ours_or_none(
        self, threads: int, name: str, source: Path | None = None, **extra: str
    ) -> Service | None:
        """Our function, or None (and the failure recorded) when it does not start: the
        predecessor's side of a phase is still measured while functions/ is being changed."""
        try:
            return self.start_function(threads, name, source, **extra)
        except RuntimeError as exc:
            log(f"our function did not start ({name}); measuring the predecessor only")
            self.fail(name, str(exc))
            return None

    def start_counting(self, threads: int, name: str, counts: Path, **extra: str) -> Service:
        """Ours from bench/counting_main.py (Firestore counted per worker into `counts`); from
        functions/main.py, uncounted, when the counting entry point no longer fits functions/."""
        counts.mkdir(parents=True, exist_ok=True)
        try:
            return self.start_function(
                threads, name, COUNTING_MAIN, BENCH_COUNTS_DIR=str(counts), **extra
            )
        except RuntimeError as exc:
            log(f"counting entry point failed ({str(exc)[-300:]}); {name} runs functions/main.py")
            self.fail(f"{name} (counting entry point)", str(exc))
            return self.start_function(threads, name, **extra)

    def start_predecessor(self, name: str, gemini_url: str | None = None) -> Service:
        """The predecessor's Node route, against the stand-in (or a tap in front of it)."""
        service = start_predecessor(
            self.run_dir, gemini_url or self.standin_url, name, self.prompts_file
        )
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

    # Phases ----------------------------------------------------------------------------

    def fail(self, name: str, text: str) -> None:
        self.results["failures"][name] = text[-2000:]

    def phase(self, name: str, body: Callable[[Run], None]) -> None:
        """Run one phase; a failure is logged and reported, and the next phase still runs.
        Whatever the phase started is stopped; the shared services stay."""
        started = time.monotonic()
        try:
            body(self)
        except Exception as exc:  # noqa: BLE001 - e.g. functions/ mid-change: keep measuring
            log(f"phase {name} failed: {type(exc).__name__}: {str(exc)[-500:]}")
            self.fail(name, f"{type(exc).__name__}: {exc}")
        finally:
            for service in [s for s in self.services if s not in (self.emulator, self.standin)]:
                self.stop(service)
            self.results.setdefault("phaseSeconds", {})[name] = time.monotonic() - started


def warm_emulator(host: str) -> None:
    """A fresh emulator answers its first few hundred requests slowly (JIT): warm it with the
    kinds of calls a turn makes (batched writes into subcollections, gets, queries)."""
    import os

    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    db = firestore.Client(project=PROJECT)
    for i in range(30):
        session = db.collection("warmup").document(f"s{i}")
        step = session.collection("steps").document(STEP)
        batch = db.batch()
        batch.set(session, {"n": i})
        batch.set(step, {"n": i})
        for m in range(10):
            batch.set(step.collection("messages").document(f"m{m}"), {"text": "x" * 200, "n": m})
        batch.commit()
        session.get()
        list(step.collection("messages").order_by("n").stream())
