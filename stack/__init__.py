"""The local services, started one way for the tests, the benchmark and ./dev.sh alike.

Every service runs in a session, and so a process group, of its own. Ctrl-C in a terminal then
reaches only the caller, and the caller stops each group whole: gcloud leaves its Java child
listening otherwise, and Node tools their workers. Output goes to a log file when one is given
(the benchmark and dev.sh: nothing to hold in memory while measuring, and a file to read after)
or is drained into `Service.output` (the tests read it); it never sits in a pipe nobody reads,
which would block the service once the pipe is full.

A service is ready when it answers HTTP from a socket of its own group: an older process still
holding the port must not pass for it. One that is not ready in time is stopped, and the error
shows what it said last.

`python -m stack dev` runs the whole stack in the foreground for ./dev.sh (see __main__.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-workshop-chat"
# The Firebase default bucket's name for the project, as deploy.sh and dev.sh use it.
FILES_BUCKET = f"{PROJECT}.firebasestorage.app"
DEMO = ROOT / "demo"
# Not resolved: .venv/bin/python is a symlink, and its console scripts sit beside the link.
VENV_BIN = Path(sys.executable).parent
EMULATOR_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
# Where gunicorn's control socket goes when the caller names no folder (see `function_env`).
RUNTIME_ROOT = Path(tempfile.gettempdir()) / "workshop-chat-run"


# --- Ports -----------------------------------------------------------------------------------


# Below Linux's ephemeral range (32768-60999): a kernel-picked port (`bind(0)`) or an outgoing
# connection's source port can land on a port we chose a moment ago and have not bound yet, so
# we pick from a range the kernel never hands out, and never hand one out twice per process.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now; the service binds it a moment later."""
    while True:
        port = random.choice(_PORTS)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:`port`. SO_REUSEADDR as servers set it, so that
    only a listener, not a closed connection's TIME_WAIT, makes it taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening_sockets(port: int) -> set[str] | None:
    """The `socket:[inode]` names of every TCP listener on `port`, any address; None where
    /proc/net cannot say (not Linux)."""
    found: set[str] = set()
    tables = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 the socket's inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found if tables else None


def group_listens(pgid: int, port: int) -> bool:
    """Whether a process of group `pgid` holds a listening socket on `port`."""
    sockets = _listening_sockets(port)
    if sockets is None:
        return True  # cannot tell: trust the answer
    if not sockets:
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in sockets:
                    return True
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return False


# --- Process groups --------------------------------------------------------------------------

# bench.sh names this file in BENCH_PGID_FILE; dev points it into its run folder.
_group_file: Path | None = (
    Path(os.environ["BENCH_PGID_FILE"]) if os.environ.get("BENCH_PGID_FILE") else None
)


def record_groups_in(path: Path | None) -> None:
    """From now on append every group started to `path` (None: nowhere)."""
    global _group_file
    _group_file = path


# The groups this process started and has not stopped yet: for a clean-up that must also reach
# a service whose start, or whose stop, a signal cut short (dev's).
running_groups: list[int] = []


def remember_group(pid: int) -> None:
    """Write a group's id down as soon as it exists, so that whoever started this Python
    (bench.sh) can stop that group even if this process dies without its own clean-up."""
    running_groups.append(pid)
    if _group_file is not None:
        with open(_group_file, "a", encoding="ascii") as f:
            f.write(f"{pid}\n")


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: they hold nothing,
    and one whose parent is the caller stays until the caller reads its status."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # the id is in use, by someone else's group
    try:
        found = list(_processes())
    except OSError:
        return True  # cannot tell zombies apart here
    return any(int(group) == pgid and state != "Z" for _, (state, _, group, *_) in found)


def _processes() -> Iterator[tuple[int, list[str]]]:
    """Each process's id and the fields of its /proc stat after "(comm)": state, ppid, pgrp,
    ... (one that ends while being read is skipped)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2 :].split()


def stop_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM to a group known only by its id, then SIGKILL to whatever is left of it after
    `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(ValueError):
        running_groups.remove(pgid)


@dataclass
class Service:
    """A started service: its group leader, its address, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    url: str = ""
    log: Path | None = None
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def drain(self) -> Service:
        """Keep reading a piped output into `output`, so that the service never blocks."""

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                self.output.append(raw.decode(errors="replace").rstrip("\n"))

        threading.Thread(target=read, name=f"drain-{self.name}", daemon=True).start()
        return self

    def lines(self) -> list[str]:
        """What it printed so far (of a log file, the last 256 KiB)."""
        if self.log is None:
            return list(self.output)
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - (256 << 10)))
                return f.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.lines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left of it.

        The group, not the leader: gcloud's Java child and Node's workers would keep listening.
        The group is given `grace` seconds (gunicorn lets its streams end), and the SIGKILL goes
        to it even when the leader has already exited, for the children it left behind.
        """
        started = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        # Children may still be finishing: what is left of the grace, at most 1 s.
        stop_group(self.pid, max(0.0, min(1.0, grace - (time.monotonic() - started))))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def spawn(
    name: str,
    command: list[str],
    *,
    url: str = "",
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start `command` in a session of its own, its output appended to `log` or, without one,
    drained into `Service.output`. Not waited for: see `start`."""
    if log is None:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # the child keeps its own copy open
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
    remember_group(process.pid)
    service = Service(name, process, url, log)
    return service.drain() if log is None else service


class NotReady(Exception):
    """A service exited, or did not answer, before it was ready."""


def wait_http(service: Service, url: str, timeout: float) -> None:
    """Until `url` answers with success from a socket of the service's own group.

    The ownership check is what makes a taken port fail: an old process on it answers at once,
    while the new one is still retrying its bind and about to give up.
    """
    port = urlsplit(url).port
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise NotReady(f"it exited with {service.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                answered = True
        except OSError:  # not up yet; an error status (HTTPError) too: a bucket not yet made
            answered = False
        if answered and (port is None or group_listens(service.pid, port)):
            return
        time.sleep(0.05)
    if answered:
        raise NotReady(f"port {port} answers, but from another process that holds it")
    raise NotReady(f"{url} did not answer within {timeout:g} s")


def wait_line(service: Service, prefix: str, timeout: float) -> str:
    """The rest of the first line the service prints that starts with `prefix`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in service.lines():
            if line.startswith(prefix):
                return line[len(prefix) :]
        if service.process.poll() is not None:
            raise NotReady(f"it exited with {service.process.returncode}")
        time.sleep(0.02)
    raise NotReady(f"it printed no {prefix.strip()!r} line within {timeout:g} s")


def start(
    name: str,
    command: list[str],
    url: str,
    ready: str,
    timeout: float,
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """`spawn`, then wait until `ready` answers. A service that does not is stopped, and the
    error carries what it said last; so is one whose wait a Ctrl-C cuts short."""
    service = spawn(name, command, url=url, log=log, env=env, cwd=cwd)
    with _starting(service):
        wait_http(service, ready, timeout)
    return service


@contextlib.contextmanager
def _starting(service: Service) -> Iterator[None]:
    """Stop a service whose readiness wait fails or is interrupted, and say what it said."""
    try:
        yield
    except NotReady as exc:
        service.stop()
        said = service.tail()
        raise RuntimeError(f"{service.name} did not start ({exc}); it said last:\n{said}") from None
    except BaseException:
        service.stop()
        raise


# --- The services ----------------------------------------------------------------------------


def firestore_emulator_command(port: int) -> list[str]:
    """The jar directly when it is there: ready in ~1 s, and no gcloud parent in between."""
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


def start_firestore_emulator(port: int | None = None, log: Path | None = None) -> Service:
    """The Firestore emulator; `url` is what FIRESTORE_EMULATOR_HOST takes (no scheme)."""
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    command = firestore_emulator_command(port)
    return start("firestore", command, host, f"http://{host}/", 60, log=log)


def reset_firestore(host: str, project: str = PROJECT) -> None:
    """Delete every document (the emulator's own route)."""
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    urllib.request.urlopen(request, timeout=30).close()


def start_storage_emulator(
    bucket: str = FILES_BUCKET, port: int | None = None, log: Path | None = None
) -> Service:
    """gcp-storage-emulator in memory, with `bucket` made; `url` is what STORAGE_EMULATOR_HOST
    takes (with its scheme). It does not enforce generation preconditions."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(VENV_BIN / "gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--default-bucket",
        bucket,
        "--in-memory",
    ]
    return start("storage", command, url, f"{url}/storage/v1/b/{bucket}", 30, log=log)


def reset_storage(url: str) -> None:
    """Delete every object, keep the buckets (the emulator's own wipe route)."""
    urllib.request.urlopen(f"{url}/wipe?keep-buckets=1", timeout=10).close()


def start_standin(log: Path | None = None, timeout: float = 30) -> Service:
    """The offline Gemini stand-in on a port it binds itself (no race for a free one); it
    prints `READY <url>` once listening."""
    command = [
        sys.executable,
        str(ROOT / "standin" / "gemini_standin.py"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    service = spawn("standin", command, log=log)
    with _starting(service):
        service.url = wait_line(service, "READY ", timeout).strip()
    return service


def function_command(port: int, source: Path | None = None) -> list[str]:
    """functions-framework, which runs gunicorn (gthread) as production does."""
    return [
        str(VENV_BIN / "functions-framework"),
        "--target",
        "chat",
        "--source",
        str(source or ROOT / "functions" / "main.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def function_env(env: dict[str, str], port: int, folder: Path | None = None) -> dict[str, str]:
    """The process environment for an instance on `port`: ours over the caller's, and a
    XDG_RUNTIME_DIR of its own (env's, else `folder`/gunicorn-PORT). gunicorn puts a control
    socket there, and two instances sharing one fight over it."""
    runtime = Path(env.get("XDG_RUNTIME_DIR") or (folder or RUNTIME_ROOT) / f"gunicorn-{port}")
    runtime.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **env, "PORT": str(port), "XDG_RUNTIME_DIR": str(runtime)}


def start_function(
    env: dict[str, str],
    port: int | None = None,
    *,
    name: str = "function",
    source: Path | None = None,
    log: Path | None = None,
    timeout: float = 60,
) -> Service:
    """The function as production runs it: functions-framework under gunicorn, ready when
    /healthz answers. WORKERS and THREADS come from `env` (functions-framework reads both).
    `source` is another entry point than functions/main.py (the benchmark's counting one)."""
    port = port or free_port()
    source = source or ROOT / "functions" / "main.py"
    url = f"http://127.0.0.1:{port}"
    full_env = function_env(env, port, log.parent if log else None)
    command = function_command(port, source)
    return start(
        name, command, url, f"{url}/healthz", timeout, log=log, env=full_env, cwd=source.parent
    )


def start_auth_emulator(
    workdir: Path,
    project: str = PROJECT,
    port: int | None = None,
    timeout: float = 180,
    log: Path | None = None,
) -> Service:
    """The Firebase Auth emulator from demo/'s firebase-tools; it issues unsigned ID tokens.

    Every port it opens (auth, hub, logging) is a free one and its hub locator and debug log go
    to `workdir`, so that it runs beside another one. Start-up is CPU-bound (~8-45 s on 2 cores).
    """
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
    return start("auth", command, host, f"http://{host}/", timeout, log=log, env=env, cwd=workdir)


def start_demo(
    out_dir: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Service:
    """The demo page on 127.0.0.1: `vite preview` of a built `out_dir`, or without one the
    dev server on the sources (hot reload; VITE_* settings from `env`). --strictPort: a taken
    port is an error, never a quiet move to the next one."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(DEMO / "node_modules" / ".bin" / "vite")]
    if out_dir is not None:
        command += ["preview", "--outDir", str(out_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--strictPort"]
    full_env = {**os.environ, **(env or {})}
    return start("demo", command, url, url + "/", 60, log=log, env=full_env, cwd=DEMO)


# --- Processes: what a service's tree holds (memory checks in tests and the benchmark) -----

PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def gunicorn_pids(service: Service, workers: int = 1, timeout: float = 10.0) -> list[int]:
    """The functions-framework master and all its gunicorn workers (RSS and CPU sum them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(service.pid)
        if len(found) >= workers:
            return [service.pid, *found]
        time.sleep(0.05)
    raise RuntimeError(f"{service.name}: {workers} gunicorn worker(s) did not appear")
