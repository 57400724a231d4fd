"""Helpers for the tests that are not fixtures: the local services (from `stack`, the one module
that starts them for the tests, the benchmark and dev.sh; re-exported here so that tests keep
writing `support.start_function`), a build of the demo page, and polling."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stack import (
    DEMO,
    EMULATOR_JAR,
    FILES_BUCKET,
    PROJECT,
    ROOT,
    Service,
    firestore_emulator_command,
    free_port,
    reset_firestore,
    reset_storage,
    start_auth_emulator,
    start_demo,
    start_firestore_emulator,
    start_function,
    start_standin,
    start_storage_emulator,
)
from stack.tokens import bearer, unsigned_token
from workshop_chat.chat import aio
from workshop_chat.chat.ports import ModelItem
from workshop_chat.cloud.gemini import Gemini

__all__ = [
    "BASE_ENV",
    "DEMO",
    "EMULATOR_JAR",
    "FILES_BUCKET",
    "PROJECT",
    "ROOT",
    "Service",
    "bearer",
    "build_demo",
    "chat_body",
    "collect",
    "firestore_emulator_command",
    "free_port",
    "function_env",
    "instances",
    "reset_firestore",
    "reset_storage",
    "sse_chunks",
    "start_auth_emulator",
    "start_demo",
    "start_firestore_emulator",
    "start_function",
    "start_standin",
    "start_storage_emulator",
    "text_of",
    "unsigned_token",
    "wait_for",
]


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


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


BASE_ENV = {
    "GOOGLE_CLOUD_PROJECT": PROJECT,
    "GEMINI_API_KEY": "test-key",
    "AUTH_MODE": "none",
    "ALLOWED_ORIGINS": "https://workshop.example",
    "KEEPALIVE_SECONDS": "0.2",
    "CHECKPOINT_SECONDS": "0.2",
    "GEMINI_RETRY_INITIAL_DELAY_SECONDS": "0.01",
    "RATE_LIMIT_PER_MINUTE": "0",
    "SESSION_RATE_LIMIT_PER_MINUTE": "0",
    "FILES_BUCKET": FILES_BUCKET,
    "SUMMARY_DELAY_SECONDS": "0.2",
    "ANONYMOUS_USERS": "allow",  # test tokens are anonymous accounts, as the demo's are
}


def chat_body(
    text: str = "Hello",
    message_id: str = "m1",
    session: str = "s1",
    step: str = "empathize",
    **extra: Any,
) -> dict[str, Any]:
    """What DefaultChatTransport sends for a plain send, with sessionId/stepId in `body`."""
    return {
        "id": "chat-1",
        "sessionId": session,
        "stepId": step,
        "trigger": "submit-message",
        "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
        **extra,
    }


def sse_chunks(body: bytes) -> list[Any]:
    """Decode a UI message stream into its chunks ([DONE] kept as the string)."""
    chunks: list[Any] = []
    for event in body.decode().split("\n\n"):
        if event.startswith("data: "):
            payload = event[len("data: ") :]
            chunks.append(payload if payload == "[DONE]" else json.loads(payload))
    return chunks


def text_of(chunks: list[Any]) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")


def function_env(
    emulator: str, standin: Service, storage: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a function process wired to the test emulator and stand-in."""
    env = {
        **BASE_ENV,
        "FIRESTORE_EMULATOR_HOST": emulator,
        "GOOGLE_GEMINI_BASE_URL": standin.url,
        **extra,
    }
    if storage:
        env["STORAGE_EMULATOR_HOST"] = storage
    return env


def collect(
    model: Gemini,
    system: str,
    contents: list[tuple[str, str]],
    into: list[ModelItem] | None = None,
) -> list[ModelItem]:
    """Read a whole reply from a thread, through the process loop (tools and tests)."""
    items: list[ModelItem] = [] if into is None else into

    async def read() -> None:
        async for item in model.stream(system, contents):
            items.append(item)

    aio.run(read())
    return items


class Post:
    """A chat POST read in a thread, as the browser tab that is about to reload or stop."""

    def __init__(self, client: Any, text: str) -> None:
        self.chunks: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(client, text))
        self._thread.start()

    def _run(self, client: Any, text: str) -> None:
        self.chunks = sse_chunks(client.post("/", json=chat_body(text)).data)

    def join(self) -> list[Any]:
        self._thread.join(30)
        assert not self._thread.is_alive()
        return self.chunks


@contextlib.contextmanager
def instances(env: dict[str, str], count: int = 2) -> Iterator[list[Service]]:
    """The production setup: `count` instances of the function, stopped at the end."""
    started = [start_function(env) for _ in range(count)]
    try:
        yield started
    finally:
        for service in started:
            service.stop()
