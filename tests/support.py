"""Starting and stopping the real local services the tests and the benchmark run against."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-workshop-chat"
# The Firebase default bucket's name for the project, as deploy.sh and dev.sh use it.
FILES_BUCKET = f"{PROJECT}.firebasestorage.app"
EMULATOR_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    output: list[str] = field(default_factory=list)

    def drain(self) -> Service:
        """Keep reading the process's output so that it never blocks on a full pipe."""

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                self.output.append(raw.decode(errors="replace").rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop the whole process group: gcloud leaves its Java child listening otherwise."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def firestore_emulator_command(port: int) -> list[str]:
    """The jar directly when it is there: ready in ~1 s, and no gcloud parent left behind."""
    if EMULATOR_JAR.exists() and shutil.which("java"):
        return [
            "java",
            "-cp",
            str(EMULATOR_JAR),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start",
            "--host=127.0.0.1",
            f"--port={port}",
        ]
    return ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]


def _start(command: list[str], url: str, ready: str, timeout: float, **popen: Any) -> Service:
    """Spawn in a process group of its own, keep reading its output, and wait until `ready`
    answers; a service that never does is stopped, and what it said is shown."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **popen,
    )
    service = Service(process, url).drain()
    try:
        wait_http(ready, timeout, process)
    except RuntimeError as exc:
        service.stop()
        output = "\n".join(service.output[-30:])
        raise RuntimeError(f"{Path(command[0]).name} did not start ({exc}):\n{output}") from None
    return service


def start_firestore_emulator() -> Service:
    port = free_port()
    host = f"127.0.0.1:{port}"
    return _start(firestore_emulator_command(port), host, f"http://{host}/", 60)


def start_storage_emulator(bucket: str = FILES_BUCKET) -> Service:
    """gcp-storage-emulator in memory, with `bucket` made; `url` is what STORAGE_EMULATOR_HOST
    takes (with its scheme). It does not enforce generation preconditions."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--default-bucket",
        bucket,
        "--in-memory",
    ]
    return _start(command, url, f"{url}/storage/v1/b/{bucket}", 30)


def reset_storage(url: str) -> None:
    """Delete every object, keep the buckets (the emulator's own wipe route)."""
    urllib.request.urlopen(f"{url}/wipe?keep-buckets=1", timeout=10).close()


def start_standin() -> Service:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "standin" / "gemini_standin.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        Service(process, "").stop()
        raise RuntimeError(f"the stand-in did not start: {line!r}")
    return Service(process, line.split(" ", 1)[1]).drain()


def reset_firestore(host: str, project: str = PROJECT) -> None:
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    urllib.request.urlopen(request, timeout=10).close()


def start_function(env: dict[str, str], port: int | None = None) -> Service:
    """The function as production runs it: functions-framework under gunicorn."""
    port = port or free_port()
    runtime = Path(env.get("XDG_RUNTIME_DIR") or f"/tmp/workshop-chat-run-{port}")
    runtime.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env, "PORT": str(port), "XDG_RUNTIME_DIR": str(runtime)}
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target",
        "chat",
        "--source",
        str(ROOT / "functions" / "main.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return _start(command, url, f"{url}/healthz", 30, env=full_env, cwd=ROOT / "functions")


DEMO = ROOT / "demo"


def start_auth_emulator(
    workdir: Path, project: str = PROJECT, port: int | None = None, timeout: float = 180
) -> Service:
    """The Firebase Auth emulator from demo/'s firebase-tools; it issues unsigned ID tokens.

    Every port it opens (auth, hub, logging) is a free one and its hub locator and debug log go
    to `workdir`, so it runs beside dev.sh's. Start-up is CPU-bound (~8-45 s on 2 cores).
    """
    import json

    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "emulators": {
            "singleProjectMode": True,
            "auth": {"host": "127.0.0.1", "port": port},
            "hub": {"host": "127.0.0.1", "port": free_port()},
            "logging": {"host": "127.0.0.1", "port": free_port()},
            "ui": {"enabled": False},
        }
    }
    (workdir / "firebase.json").write_text(json.dumps(config, indent=2))
    command = [
        str(DEMO / "node_modules" / ".bin" / "firebase"),
        "emulators:start",
        "--only",
        "auth",
        "--project",
        project,
        "--config",
        str(workdir / "firebase.json"),
    ]
    env = {**os.environ, "TMPDIR": str(workdir), "NO_UPDATE_NOTIFIER": "1"}
    host = f"127.0.0.1:{port}"
    return _start(command, host, f"http://{host}/", timeout, cwd=workdir, env=env)


def build_demo(out_dir: Path, env: dict[str, str]) -> None:
    """`vite build` of demo/ into `out_dir`, with VITE_* settings baked in from `env`."""
    vite = DEMO / "node_modules" / ".bin" / "vite"
    result = subprocess.run(
        [str(vite), "build", "--outDir", str(out_dir), "--emptyOutDir", "--logLevel", "warn"],
        cwd=DEMO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"vite build failed:\n{result.stdout}\n{result.stderr}")


def start_demo(out_dir: Path, port: int | None = None) -> Service:
    """`vite preview` serving a `build_demo` output on 127.0.0.1."""
    port = port or free_port()
    vite = DEMO / "node_modules" / ".bin" / "vite"
    url = f"http://127.0.0.1:{port}"
    command = [
        str(vite),
        "preview",
        "--outDir",
        str(out_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--strictPort",
    ]
    return _start(command, url, url + "/", 30, cwd=DEMO)


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
