"""One account must not take an instance down for everyone: a flood of the largest bodies,
each refused only once read, against the function as deployed (two gunicorn workers), while
another user's reply streams. The process tree's memory is sampled from /proc throughout."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stack import gunicorn_pids, rss_bytes
from tests import support
from tests.support import bearer, chat_body, sse_chunks, text_of, unsigned_token

MIB = 1 << 20
FLOOD = 60
LIMIT = 512 * MIB


@pytest.fixture(scope="module")
def deployed(emulator: str, standin_service: support.Service) -> Iterator[support.Service]:
    env = support.function_env(
        emulator,
        standin_service,
        WORKERS="2",
        THREADS="80",
        AUTH_MODE="firebase",
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099",
        RATE_LIMIT_PER_MINUTE="30",
    )
    service = support.start_function(env)
    yield service
    service.stop()


def big_invalid_body() -> bytes:
    """About 14 MB: one 10 MB file part, and a message id the protocol refuses, found only
    once the whole body is read and parsed."""
    data = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(10 * MIB)).decode()
    body = chat_body("look", "bad id!")
    body["messages"][0]["parts"].append(
        {"type": "file", "mediaType": "image/png", "url": f"data:image/png;base64,{data}"}
    )
    return json.dumps(body).encode()


def post(url: str, body: bytes, uid: str, timeout: float = 60) -> tuple[int, bytes]:
    """Status and body; 0 when the server closed the connection while the body was sent (a
    refusal that did not wait for it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": "application/json", **bearer(unsigned_token(uid))}
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except (BrokenPipeError, ConnectionResetError):
        return 0, b""
    finally:
        conn.close()


def test_a_flood_of_big_bodies_from_one_account_leaves_memory_bounded_and_others_served(
    deployed: support.Service, db: Any
) -> None:
    pids = gunicorn_pids(deployed, workers=2)
    before = sum(rss_bytes(p) for p in pids)
    peak = [before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], sum(rss_bytes(p) for p in pids))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    victim: dict[str, Any] = {}

    def stream() -> None:
        text = "the team's notes [[standin words=200 chunks=40 delay_ms=50]]"
        body = json.dumps(chat_body(text, "v1", session="bob-s")).encode()
        victim["status"], victim["body"] = post(deployed.url, body, "bob")

    body = big_invalid_body()
    results: list[int] = []
    victim_thread = threading.Thread(target=stream)
    victim_thread.start()
    flood = [
        threading.Thread(target=lambda: results.append(post(deployed.url, body, "mallory")[0]))
        for _ in range(FLOOD)
    ]
    for thread in flood:
        thread.start()
    for thread in flood:
        thread.join(120)
    victim_thread.join(60)
    sampling.set()
    sampler.join()

    assert len(results) == FLOOD and all(code in (0, 400, 429, 503) for code in results)
    assert results.count(400) >= 1  # some were read, and refused for what they held
    assert peak[0] < LIMIT, f"peak {peak[0] / MIB:.0f} MiB (from {before / MIB:.0f} MiB)"
    # The other user's reply came whole, and the attacker left nothing behind.
    assert victim["status"] == 200
    chunks = sse_chunks(victim["body"])
    assert text_of(chunks).endswith(" w200") and chunks[-1] == "[DONE]"
    assert not list(db.collection("sessions").document("s1").collections())
    print(f"flood peak RSS {peak[0] / MIB:.0f} MiB (idle {before / MIB:.0f} MiB)")
