"""One account's flood of the largest bodies at a running function, while another user's reply
streams: what the memory test asserts and what the benchmark reports.

Each body is about 14 MB (one 10 MB file part) and is refused only once read and parsed (its
message id is not one the protocol takes): the costliest request a stranger can send. The
function's process tree (the functions-framework master and its gunicorn workers) is sampled
from /proc every 20 ms throughout.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass

from . import Service, gunicorn_pids, rss_bytes
from .tokens import bearer, unsigned_token

MIB = 1 << 20
ATTACKER = "mallory"
VICTIM = "bob"
# The victim's reply: 200 words over 40 chunks, 50 ms apart, so that it streams through the flood.
VICTIM_TEXT = "the team's notes [[standin words=200 chunks=40 delay_ms=50]]"
VICTIM_ENDS_WITH = " w200"


@dataclass(frozen=True)
class Outcome:
    idle_rss: int  # bytes, the process tree before the flood
    peak_rss: int  # bytes, the most the tree held at once during it
    statuses: Counter[int]  # the flood's answers (0: closed while the body was being sent)
    seconds: float
    victim_status: int
    victim_body: bytes

    def victim_whole(self) -> bool:
        """The other user's reply came to its end, every word of it."""
        text, done = "", False
        for event in self.victim_body.decode(errors="replace").split("\n\n"):
            payload = event.removeprefix("data: ")
            if payload == "[DONE]":
                done = True
            elif event.startswith("data: "):
                chunk = json.loads(payload)
                if chunk.get("type") == "text-delta":
                    text += chunk["delta"]
        return self.victim_status == 200 and done and text.endswith(VICTIM_ENDS_WITH)


def big_invalid_body() -> bytes:
    data = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(10 * MIB)).decode()
    parts = [
        {"type": "text", "text": "look"},
        {"type": "file", "mediaType": "image/png", "url": f"data:image/png;base64,{data}"},
    ]
    return _chat(parts, "bad id!", "s1")


def _chat(parts: list[dict[str, str]], message_id: str, session: str) -> bytes:
    """What DefaultChatTransport sends for a plain send."""
    message = {"id": message_id, "role": "user", "parts": parts}
    body = {"id": "chat-1", "sessionId": session, "stepId": "empathize", "messages": [message]}
    body["trigger"] = "submit-message"
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


def flood(function: Service, workers: int, requests: int = 60) -> Outcome:
    """`requests` big invalid bodies at once from ATTACKER, and VICTIM's turn among them."""
    pids = gunicorn_pids(function, workers=workers)
    idle = sum(rss_bytes(p) for p in pids)
    peak = [idle]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], sum(rss_bytes(p) for p in pids))
            time.sleep(0.02)

    victim: list[tuple[int, bytes]] = []
    statuses: list[int] = []
    body = big_invalid_body()
    session = f"{VICTIM}-{time.time_ns()}"
    turn = _chat([{"type": "text", "text": VICTIM_TEXT}], "v1", session)
    threads = [threading.Thread(target=sample)]
    threads.append(threading.Thread(target=lambda: victim.append(post(function.url, turn, VICTIM))))
    threads += [
        threading.Thread(target=lambda: statuses.append(post(function.url, body, ATTACKER)[0]))
        for _ in range(requests)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join(120)
    seconds = time.monotonic() - started
    sampling.set()
    threads[0].join()
    status, reply = victim[0] if victim else (0, b"")
    return Outcome(idle, peak[0], Counter(statuses), seconds, status, reply)
