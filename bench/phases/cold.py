"""Cold start: the import time of functions/main.py, and process spawn -> first streamed byte.

Both as deployed: AUTH_MODE=firebase (firebase-admin loaded; tokens are unsigned, accepted
through an Auth emulator address that is never called), deploy.sh's WORKERS, and the dev venv's
extra packages hidden (bench/deployed_site) because google-genai imports aiohttp whenever it is
installed while functions/requirements.txt does not install it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from stack import PROJECT, ROOT, Service, free_port, function_command, function_env, spawn

from .. import standin_control
from ..client import FUNCTION_TEXT, chat_body, request_bytes, stream
from ..context import STEP, Run, log


@dataclass(frozen=True)
class Plan:
    spawns: int  # with the deployed dependencies; half as many with the dev venv
    import_repeats: int


FULL = Plan(spawns=5, import_repeats=5)
QUICK = Plan(spawns=2, import_repeats=3)
# (label, hide packages the deployed function does not have)
VARIANTS = (("deployed dependencies", True), ("dev venv", False))
DEPLOYED_SITE = ROOT / "bench" / "deployed_site"


def run(ctx: Run) -> None:
    plan: Plan = ctx.plans["cold"]
    log("cold start: import time")
    ctx.results["import"] = {
        name: _import_time(ctx, deployed, plan.import_repeats) for name, deployed in VARIANTS
    }
    log("cold start: spawn -> first byte")
    counts = (plan.spawns, max(1, plan.spawns // 2))
    ctx.results["coldStart"] = {
        name: asyncio.run(_spawn_to_first_byte(ctx, deployed, runs))
        for (name, deployed), runs in zip(VARIANTS, counts, strict=True)
    }


def _env(ctx: Run, port: int, deployed: bool) -> dict[str, str]:
    env = ctx.env(64, AUTH_MODE="firebase", FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9")
    if deployed:
        env["PYTHONPATH"] = str(DEPLOYED_SITE)
    return function_env(env, port, ctx.run_dir)


def _import_time(ctx: Run, deployed: bool, repeats: int) -> dict[str, Any]:
    env = _env(ctx, 0, deployed)
    code = (
        "import time,sys; t=time.perf_counter(); c=time.process_time(); import main; "
        "sys.stderr.write('IMPORT %f %f\\n' % (time.perf_counter()-t, time.process_time()-c))"
    )
    walls, cpus = [], []
    for _ in range(repeats):
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
        "top": _top_imports(profile),
    }


async def _spawn_to_first_byte(ctx: Run, deployed: bool, count: int) -> dict[str, Any]:
    standin_control.configure(ctx.standin_url, chunks=3)
    runs = []
    for i in range(count):
        port = free_port()
        token = _unsigned_token(f"cold-user-{i}")
        body = chat_body(f"cold-{uuid.uuid4().hex[:6]}-{i}", STEP, "m0", "cold start")
        raw = request_bytes("127.0.0.1", port, "/", body, {"Authorization": f"Bearer {token}"})
        log_file = ctx.run_dir / f"cold-{i}.log"
        spawned = time.monotonic()
        service = spawn(
            "cold",
            function_command(port, ROOT / "functions" / "main.py"),
            url=f"http://127.0.0.1:{port}",
            log=log_file,
            env=_env(ctx, port, deployed),
            cwd=ROOT / "functions",
        )
        ctx.services.append(service)
        try:
            bound = _wait_listening(service, port, spawned + 30)
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
            ctx.stop(service)
    keys = ("listening", "firstByte", "firstText", "turnTtfc")
    return {"runs": runs, **{k: statistics.median(r[k] for r in runs) for k in keys}}


def _wait_listening(service: Service, port: int, deadline: float) -> float:
    """When the port first accepts: the master binds before the workers import."""
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic()
        if service.process.poll() is not None:
            raise RuntimeError(f"cold instance exited:\n{service.tail()}")
        time.sleep(0.002)
    raise RuntimeError("cold instance never listened")


def _top_imports(profile: subprocess.CompletedProcess[bytes], count: int = 8) -> list[Any]:
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


def _unsigned_token(uid: str) -> str:
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
