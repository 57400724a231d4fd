"""./dev.sh as a newcomer runs it: piped to tee, stopped with Ctrl-C, started again, and refused
on a taken port. Each run has ports and a run folder of its own, beside any real ./dev.sh."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import stack
from tests.support import ROOT, free_port, wait_for

# Settings of the test process (the fixtures export some) that would make dev.sh skip a service.
NOT_INHERITED = (
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "FIREBASE_AUTH_EMULATOR_HOST",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
)


def dev_env(run_dir: Path, port: int, demo_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return {**env, "PORT": str(port), "DEMO_PORT": str(demo_port), "RUN_DIR": str(run_dir), **extra}


class Piped:
    """`./dev.sh 2>&1 | tee dev.log` as a terminal's foreground job: a process group of its
    own, which a Ctrl-C signals whole (dev.sh and tee alike)."""

    def __init__(self, env: dict[str, str], log: Path, args: str = "") -> None:
        self.log = log
        self.run_dir = Path(env["RUN_DIR"])
        self.process = subprocess.Popen(
            ["bash", "-c", f"./dev.sh {args} 2>&1 | tee {log}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_ready(self, timeout: float = 240) -> str:
        """The output up to "Ctrl-C stops everything.", printed after "Ready."."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if "Ctrl-C stops everything." in text:
                return text
            assert self.process.poll() is None, f"dev.sh ended early:\n{text}"
            time.sleep(0.2)
        raise AssertionError(f"dev.sh was not ready within {timeout} s:\n{self.text()}")

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        # The whole job ends, dev.sh's Python included, not only tee and bash.
        wait_for(lambda: not stack.group_alive(self.process.pid), timeout=60, interval=0.1)
        self.process.wait(5)

    def kill(self) -> None:
        """Whatever a failed test left: the job, and the groups dev.sh wrote down."""
        for pgid in [self.process.pid, *recorded_groups(self.run_dir)]:
            stack.stop_group(pgid, grace=5)


def recorded_groups(run_dir: Path) -> list[int]:
    path = run_dir / "pgids"
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def printed_ports(text: str) -> set[int]:
    """Every port the run announced (its emulators' free ones too)."""
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}


def try_it(text: str) -> str:
    """Run the "Try it" commands exactly as printed, in the order printed."""
    lines = text.split("Try it", 1)[1].splitlines()
    commands = "\n".join(line[2:] for line in lines if line.startswith("  "))
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + commands],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{commands}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status == 200


def assert_all_stopped(run_dir: Path, ports: set[int]) -> None:
    """No process of any group the run started is left, and no port it used is held."""
    groups = recorded_groups(run_dir)
    assert len(groups) >= 5, groups  # emulators, stand-in, function, page
    assert [g for g in groups if stack.group_alive(g)] == []
    assert [p for p in sorted(ports) if not stack.port_is_free(p)] == []


@pytest.fixture
def runs() -> Iterator[list[Piped]]:
    started: list[Piped] = []
    yield started
    for run in started:
        run.kill()


@pytest.mark.timeout(600)
def test_ctrl_c_through_tee_stops_everything_and_the_next_run_starts_clean(
    tmp_path: Path, runs: list[Piped]
) -> None:
    port, demo_port = free_port(), free_port()
    run_dir = tmp_path / "run"

    first = Piped(dev_env(run_dir, port, demo_port), tmp_path / "dev.log")
    runs.append(first)
    text = first.wait_ready()
    assert "Ready." in text
    # The token is got before the request that uses it, so the lines work as pasted.
    assert text.index("TOKEN=$(") < text.index("curl -N")
    reply = try_it(text)
    assert '"delta":"Echo' in reply and "data: [DONE]" in reply, reply
    assert answers(f"http://127.0.0.1:{demo_port}/")
    ports = printed_ports(text) | {port, demo_port}
    first.ctrl_c()
    assert_all_stopped(run_dir, ports)

    # Again on the same ports, without the Auth emulator and with each request's trace drawn:
    # it starts, answers, and stops.
    env = dev_env(run_dir, port, demo_port, AUTH_MODE="none")
    second = Piped(env, tmp_path / "dev2.log", "--traces")
    runs.append(second)
    text = second.wait_ready()
    assert "TOKEN" not in text
    assert "data: [DONE]" in try_it(text)
    deadline = time.monotonic() + 15
    while "chat gemini" not in second.text() and time.monotonic() < deadline:
        time.sleep(0.2)
    drawn = second.text()[len(text) :]
    assert "trace " in drawn and " POST /" in drawn, drawn
    assert "firestore claim" in drawn and "claim won (new)" in drawn, drawn
    assert "chat gemini-2.5-flash" in drawn and "first token" in drawn, drawn
    assert answers(f"http://127.0.0.1:{demo_port}/")
    second.ctrl_c()
    assert_all_stopped(run_dir, printed_ports(text) | {port, demo_port})


@pytest.mark.parametrize("name", ["PORT", "DEMO_PORT"])
def test_a_taken_port_is_refused_with_its_number(tmp_path: Path, name: str) -> None:
    ports = {"PORT": free_port(), "DEMO_PORT": free_port()}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports[name] = holder.getsockname()[1]
        done = subprocess.run(
            ["./dev.sh"],
            cwd=ROOT,
            env=dev_env(tmp_path / "run", ports["PORT"], ports["DEMO_PORT"]),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert f"port {ports[name]} ({name}) is already in use" in done.stderr, done.stderr
    assert "Ready." not in done.stdout
    assert recorded_groups(tmp_path / "run") == []  # nothing was started
