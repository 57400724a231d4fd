"""`python -m stack dev`: the whole local stack in the foreground, as ./dev.sh runs it.

Configured by the environment, as dev.sh documents: PORT and DEMO_PORT (8080, 5173),
GOOGLE_CLOUD_PROJECT, FILES_BUCKET, AUTH_MODE, THREADS, ALLOWED_ORIGINS, RUN_DIR (logs, .run/);
a service whose address is already set (FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST,
GEMINI_API_KEY, FIREBASE_AUTH_EMULATOR_HOST) is not started.

Why it is Python and not bash: `./dev.sh 2>&1 | tee dev.log` and Ctrl-C send SIGINT to the whole
foreground group, tee included, and tee may die first. The clean-up must then neither die of
SIGPIPE nor stop at the first failed print, which a bash EXIT trap did, leaving every service
running. Here a signal (INT, TERM or HUP) ends the wait, the clean-up ignores further ones and
printing never fails, and the services, each in a group of their own, are stopped whole.

A taken PORT or DEMO_PORT is refused before anything starts, and "Ready." is printed only once
each service answered from its own socket (stack.wait_http), never from an older process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TextIO

import stack
from stack import Service, traces

# File descriptors whose reader is gone: nothing more is printed there.
_gone: set[int] = set()


def say(text: str = "", stream: TextIO | None = None) -> None:
    """Print and flush, and never fail: once the reader has gone (tee died of the same Ctrl-C:
    EPIPE; a closed terminal: EIO), the stream goes to /dev/null and the clean-up goes on."""
    out = stream or sys.stdout
    fd = out.fileno()
    if fd in _gone:
        return
    try:
        out.write(text + "\n")
        out.flush()
    except OSError:
        _gone.add(fd)
        # Also what is still buffered: the flush at exit would fail (and complain) otherwise.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


def warn(text: str) -> None:
    say(f"dev.sh: {text}", sys.stderr)


class Stopped(BaseException):
    """A signal to stop; a BaseException, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum: int, frame: FrameType | None) -> None:
    # Ignored from here on, before anything else runs: a second Ctrl-C, or the SIGHUP of a
    # closing terminal right after it, must not cut the clean-up short.
    ignore_stop_signals()
    raise Stopped(signum)


def catch_stop_signals() -> None:
    """INT, TERM and HUP end the run; one ignored on entry stays ignored (nohup, `&` in a
    script), as a shell would keep it."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)


def ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def shown(path: Path) -> str:
    """A path as the reader would type it from the repository's root."""
    try:
        return str(path.relative_to(stack.ROOT))
    except ValueError:
        return str(path)


class Dev:
    """One ./dev.sh run: its settings, the services it started, and what it prints."""

    def __init__(self, env: Mapping[str, str], traces: bool = False) -> None:
        self.env = env
        # Each request's trace drawn in the terminal as it ends (`stack/traces.py`).
        self.traces = traces
        self._function_log: Path | None = None
        self._read = 0  # how far the function's log has been read for spans
        self._spans: dict[str, list[dict]] = {}
        self.port = int(env.get("PORT") or 8080)
        self.demo_port = int(env.get("DEMO_PORT") or 5173)
        self.project = env.get("GOOGLE_CLOUD_PROJECT") or stack.PROJECT
        self.bucket = env.get("FILES_BUCKET") or f"{self.project}.firebasestorage.app"
        self.auth_mode = env.get("AUTH_MODE") or "firebase"
        self.run_dir = Path(env.get("RUN_DIR") or stack.ROOT / ".run").resolve()
        # Every group started, as soon as it exists: to stop by hand if this process is killed.
        self.groups = self.run_dir / "pgids"
        self.services: list[Service] = []
        self.firestore = env.get("FIRESTORE_EMULATOR_HOST", "")
        self.storage = env.get("STORAGE_EMULATOR_HOST", "")
        self.auth = env.get("FIREBASE_AUTH_EMULATOR_HOST", "")

    def taken_port(self) -> str | None:
        """Why the fixed ports cannot be used, or None. Checked before anything starts."""
        if self.port == self.demo_port:
            return f"PORT and DEMO_PORT are both {self.port}"
        for name, port in (("PORT", self.port), ("DEMO_PORT", self.demo_port)):
            if not stack.port_is_free(port):
                return (
                    f"port {port} ({name}) is already in use; stop what listens there (another"
                    f" ./dev.sh?) or choose another port, e.g. {name}={port + 1} ./dev.sh"
                )
        return None

    def log(self, name: str) -> Path:
        """A fresh log file in the run folder (the services append)."""
        path = self.run_dir / f"{name}.log"
        path.unlink(missing_ok=True)
        return path

    def started(self, service: Service, what: str) -> Service:
        self.services.append(service)
        say(f"== {what} (log: {shown(service.log)})" if service.log else f"== {what}")
        return service

    def start_all(self) -> None:
        """Each service, waited for in turn: the function after those it uses, the page last."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.groups.write_text("")
        stack.record_groups_in(self.groups)

        function_env = {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FILES_BUCKET": self.bucket,  # as deploy.sh does
            "AUTH_MODE": self.auth_mode,
            "THREADS": self.env.get("THREADS") or "1000",  # one gunicorn thread per open stream
            "ALLOWED_ORIGINS": self.env.get("ALLOWED_ORIGINS")
            or f"http://localhost:{self.demo_port},http://127.0.0.1:{self.demo_port}",
            "XDG_RUNTIME_DIR": str(self.run_dir / "gunicorn"),  # a control socket of its own
            # The demo signs in anonymously, and App Check is off locally unless configured.
            "ANONYMOUS_USERS": self.env.get("ANONYMOUS_USERS") or "allow",
        }
        # OpenTelemetry as configured (an OTLP collector, say), or on the console for --traces.
        function_env.update({k: v for k, v in self.env.items() if k.startswith("OTEL_")})
        if self.traces:
            function_env["OTEL_TRACES_EXPORTER"] = "console"
        if not self.firestore:
            service = stack.start_firestore_emulator(log=self.log("firestore"))
            self.firestore = service.url
            self.started(service, f"Firestore emulator on {service.url}")
        function_env["FIRESTORE_EMULATOR_HOST"] = self.firestore

        if not self.storage:
            service = stack.start_storage_emulator(self.bucket, log=self.log("storage"))
            self.storage = service.url
            self.started(service, f"Cloud Storage emulator on {service.url}")
        function_env["STORAGE_EMULATOR_HOST"] = self.storage  # google-cloud-storage's own

        real_model = self.env.get("GEMINI_API_KEY") or self.env.get("GOOGLE_API_KEY")
        if not real_model and self.env.get("GOOGLE_GENAI_USE_VERTEXAI") != "true":
            service = stack.start_standin(log=self.log("standin"))
            function_env["GOOGLE_GEMINI_BASE_URL"] = service.url
            function_env["GEMINI_API_KEY"] = "standin"
            self.started(service, f"Gemini stand-in on {service.url}, offline")

        if self.auth_mode == "firebase" and not self.auth:
            say("== starting the Firebase Auth emulator (10-45 s of CPU)")
            service = stack.start_auth_emulator(
                self.run_dir / "auth", self.project, log=self.log("auth")
            )
            self.auth = service.url
            self.started(service, f"Firebase Auth emulator on {service.url}")
        if self.auth:
            function_env["FIREBASE_AUTH_EMULATOR_HOST"] = self.auth

        self._function_log = self.log("function")
        service = stack.start_function(function_env, self.port, log=self._function_log)
        self.started(service, f"function on {service.url}")

        # App Check (optional, off unless a site key is set) reads VITE_APP_CHECK_SITE_KEY,
        # VITE_APP_CHECK_DEBUG_TOKEN, VITE_FIREBASE_APP_ID and VITE_FIREBASE_API_KEY from the
        # environment, passed on as they are.
        page_env = {
            "VITE_CHAT_URL": service.url,
            "VITE_FIREBASE_PROJECT": self.project,
            "VITE_AUTH_EMULATOR_URL": f"http://{self.auth}" if self.auth else "",
        }
        service = stack.start_demo(port=self.demo_port, env=page_env, log=self.log("demo"))
        self.started(service, f"demo page on http://localhost:{self.demo_port}")

    def ready(self) -> None:
        """What runs where, and a first turn to paste: the token first, the request after."""
        lines = [
            "",
            "Ready.",
            f"  Function:  http://127.0.0.1:{self.port}",
            f"  Demo page: http://localhost:{self.demo_port}",
            f"  Firestore: {self.firestore} (project {self.project})",
            f"  Storage:   {self.storage} (bucket {self.bucket})",
        ]
        if self.auth:
            lines.append(f"  Auth:      {self.auth} (Firebase Auth emulator)")
        lines.append(f"  Logs:      {shown(self.run_dir)}/")
        lines.append("")
        auth_header = ""
        if self.auth_mode == "firebase":
            lines += [
                "Try it: get a TOKEN from the Auth emulator (AUTH_MODE=none ./dev.sh needs none),",
                "then send a turn:",
                f"  TOKEN=$(curl -s -X POST 'http://{self.auth}/identitytoolkit.googleapis.com"
                "/v1/accounts:signUp?key=any' \\",
                "    -H 'Content-Type: application/json' -d '{\"returnSecureToken\":true}' \\",
                "    | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"idToken\"])')",
            ]
            auth_header = ' -H "Authorization: Bearer $TOKEN"'
        else:
            lines.append("Try it:")
        body = (
            '{"sessionId":"s1","stepId":"empathize","message":{"id":"m1","role":"user",'
            '"parts":[{"type":"text","text":"Hello"}]}}'
        )
        lines += [
            f"  curl -N http://127.0.0.1:{self.port}/{auth_header}"
            " -H 'Content-Type: application/json' \\",
            f"    -d '{body}'",
            "",
            "Ctrl-C stops everything.",
        ]
        if self.traces:
            lines.append("Each request's trace is drawn here as it ends (spans: function log).")
        say("\n".join(lines))

    def watch(self) -> int:
        """Until a signal, or until a service exits: then the stack is no longer whole."""
        while True:
            if self.traces:
                self.draw_traces()
            for service in self.services:
                if service.process.poll() is not None:
                    warn(
                        f"{service.name} exited with {service.process.returncode}; "
                        f"it said last:\n{service.tail()}"
                    )
                    return 1
            time.sleep(0.5)

    def draw_traces(self) -> None:
        """The spans the function printed since the last look; a trace is drawn once its
        request's server span has ended (its other spans end before it)."""
        if self._function_log is None or not self._function_log.exists():
            return
        with self._function_log.open(encoding="utf-8", errors="replace") as log:
            log.seek(self._read)
            text = log.read()
        complete = text[: text.rfind("\n") + 1]
        self._read += len(complete.encode("utf-8", errors="replace"))
        for span in traces.spans_in(complete.splitlines()):
            trace_id = span["context"]["trace_id"]
            self._spans.setdefault(trace_id, []).append(span)
            if span["kind"] == "SpanKind.SERVER" or span.get("links"):
                done = self._spans.pop(trace_id)
                if not span["name"].endswith("/healthz"):  # readiness probes: nothing to see
                    say(traces.waterfall(done))

    def stop(self) -> None:
        """Every service, then any group still running that this run started: a service whose
        start a signal cut short was being stopped then, and may not be yet."""
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        for pgid in list(stack.running_groups):
            stack.stop_group(pgid)


def dev(show_traces: bool = False) -> int:
    try:
        run = Dev(os.environ, show_traces)
    except ValueError:
        warn("PORT and DEMO_PORT must be port numbers")
        return 2
    if why := run.taken_port():
        warn(why)
        return 1
    catch_stop_signals()
    status = 0
    try:
        run.start_all()
        run.ready()
        status = run.watch()
    except Stopped as stop:
        status = 128 + stop.signum
    except RuntimeError as exc:  # a service did not start; it said why
        warn(str(exc))
        status = 1
    finally:
        ignore_stop_signals()
        if stack.running_groups:
            say("\nstopping...")
            run.stop()
            say("stopped.")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description="The local stack.")
    commands = parser.add_subparsers(dest="command", required=True)
    dev_command = commands.add_parser(
        "dev", help="the whole stack in the foreground, as ./dev.sh runs it"
    )
    dev_command.add_argument(
        "--traces", action="store_true", help="draw each request's trace as it ends"
    )
    drawn = commands.add_parser("traces", help="draw the traces in a function log")
    drawn.add_argument("log", nargs="?", default=str(stack.ROOT / ".run" / "function.log"))
    args = parser.parse_args(argv)
    if args.command == "traces":
        with open(args.log, encoding="utf-8", errors="replace") as log:
            found = traces.by_trace(traces.spans_in(log))
        for spans in found.values():
            say(traces.waterfall(spans) + "\n")
        return 0 if found else 1
    return dev(args.traces)


if __name__ == "__main__":
    sys.exit(main())
