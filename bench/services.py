"""The local services a benchmark runs against, each in its own process group.

Every group id is appended to `$BENCH_PGID_FILE` as soon as it exists, so that bench.sh can stop
whatever is left even if this process dies without running its own clean-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support import firestore_emulator_command

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-workshop-chat"
VENV_BIN = Path(sys.executable).parent
PREDECESSOR = ROOT / "bench" / "predecessor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remember_group(pid: int) -> None:
    path = os.environ.get("BENCH_PGID_FILE")
    if path:
        with open(path, "a", encoding="ascii") as f:
            f.write(f"{pid}\n")


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM to the whole group, then SIGKILL: nothing the service started may linger."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        # The leader may be gone while children of its group still run (gcloud -> java).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn(
    name: str,
    command: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    out: IO[bytes] = open(log, "ab")  # noqa: SIM115 - the child holds it, we close our copy
    try:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    finally:
        out.close()
    remember_group(process.pid)
    return process


def wait_http(url: str, timeout: float, service: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with {service.process.returncode}:\n{service.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{service.name}: {url} did not answer within {timeout} s\n{service.tail()}")


def start_firestore_emulator(run_dir: Path) -> Service:
    port = free_port()
    command = firestore_emulator_command(port)
    log = run_dir / "firestore.log"
    service = Service("firestore", spawn("firestore", command, log), f"127.0.0.1:{port}", log)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 60, service)
    except Exception:
        service.stop()
        raise
    return service


def start_standin(run_dir: Path) -> Service:
    port = free_port()
    log = run_dir / "standin.log"
    command = [
        sys.executable,
        str(ROOT / "standin" / "gemini_standin.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    service = Service("standin", spawn("standin", command, log), f"http://127.0.0.1:{port}", log)
    try:
        wait_http(f"{service.url}/_standin/health", 30, service)
    except Exception:
        service.stop()
        raise
    return service


def function_command(port: int, source: Path) -> list[str]:
    return [
        str(VENV_BIN / "functions-framework"),
        "--target",
        "chat",
        "--source",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def function_env(run_dir: Path, port: int, env: dict[str, str]) -> dict[str, str]:
    # gunicorn's control socket lives under XDG_RUNTIME_DIR: one per instance (platform notes).
    runtime = run_dir / f"gunicorn-{port}"
    runtime.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **env, "PORT": str(port), "XDG_RUNTIME_DIR": str(runtime)}


def start_function(
    run_dir: Path,
    env: dict[str, str],
    name: str = "function",
    source: Path | None = None,
    wait: bool = True,
) -> Service:
    """The function as production runs it: functions-framework -> gunicorn gthread.

    `WORKERS` and `THREADS` come from `env` (functions-framework reads both; WORKERS default 1).
    """
    port = free_port()
    source = source or ROOT / "functions" / "main.py"
    log = run_dir / f"{name}-{port}.log"
    process = spawn(
        name,
        function_command(port, source),
        log,
        env=function_env(run_dir, port, env),
        cwd=source.parent,
    )
    service = Service(name, process, f"http://127.0.0.1:{port}", log)
    if wait:
        try:
            wait_http(f"{service.url}/healthz", 60, service)
        except Exception:
            service.stop()
            raise
    return service


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
    process = spawn(name, [node, "server.mjs"], log, env=env, cwd=PREDECESSOR)
    service = Service(name, process, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(f"{service.url}/healthz", 30, service)
    except Exception:
        service.stop()
        raise
    return service


def reset_firestore(host: str, project: str = PROJECT) -> None:
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    urllib.request.urlopen(request, timeout=30).close()


# --- /proc: memory and CPU of a process tree ------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


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


def gunicorn_pids(service: Service, workers: int = 1, timeout: float = 10.0) -> list[int]:
    """The functions-framework master and all its gunicorn workers (RSS and CPU sum them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(service.pid)
        if len(found) >= workers:
            return [service.pid, *found]
        time.sleep(0.05)
    raise RuntimeError(f"{service.name}: {workers} gunicorn worker(s) did not appear")
