"""Turns in order, as production runs: two instances, a team's members on either, the step's
single active reply decided in Firestore. Each reply is one model call with everything stored
before it in context; what waits is bounded; a member removed mid-stream stops hearing it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests import support
from tests.support import bearer, chat_body, sse_chunks, text_of, unsigned_token


@pytest.fixture(scope="module")
def instances(emulator, standin_service) -> Iterator[list[support.Service]]:
    env = support.function_env(
        emulator,
        standin_service,
        AUTH_MODE="firebase",
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099",
        WORKERS="2",
        THREADS="16",
        CHECKPOINT_SECONDS="0.2",
        MAX_QUEUED_PER_STEP="2",
    )
    with support.instances(env) as started:
        yield started


def as_(uid: str) -> dict[str, str]:
    return bearer(unsigned_token(uid))


def send(service: support.Service, uid: str, body: dict) -> requests.Response:
    return requests.post(service.url, json=body, headers=as_(uid), timeout=60, stream=True)


def team_session(instances: list[support.Service], standin: Any) -> str:
    """A session of alice's, with carol a member who joined through the other instance."""
    a, b = instances
    session = f"team-{time.monotonic_ns()}"
    opened = send(a, "alice", chat_body("Hello team", "open", session=session))
    assert text_of(sse_chunks(opened.content)) == "Echo: Hello team"
    made = requests.post(
        f"{a.url}/sessions/{session}/invites", json={"role": "member"}, headers=as_("alice")
    )
    code = made.json()["code"]
    joined = requests.post(
        f"{b.url}/sessions/{session}/members",
        json={"code": code, "name": "Carol"},
        headers=as_("carol"),
    )
    assert joined.status_code == 200, joined.text
    standin.reset()
    return session


def history(service: support.Service, session: str) -> list[dict]:
    got = requests.get(
        f"{service.url}/sessions/{session}/steps/empathize/messages", headers=as_("alice")
    )
    return got.json()["messages"]


def test_two_members_sending_at_once_on_two_instances_get_replies_in_order(instances, standin, db):
    session = team_session(instances, standin)
    a, b = instances
    slow = "[[standin chunks=12 delay_ms=60]]"
    bodies = {
        "alice": (a, chat_body(f"first {slow}", "x1", session=session)),
        "carol": (b, chat_body(f"second {slow}", "x2", session=session)),
    }
    got: dict[str, list] = {}
    start = threading.Barrier(2)

    def go(uid: str) -> None:
        service, body = bodies[uid]
        start.wait()
        response = send(service, uid, body)
        assert response.status_code == 200, response.text
        got[uid] = sse_chunks(response.content)

    threads = [threading.Thread(target=go, args=(uid,)) for uid in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(got) == {"alice", "carol"}
    calls = standin.model_requests()
    assert len(calls) == 2  # exactly one model call a reply, whoever raced whom
    messages = history(a, session)
    order = [m["id"] for m in messages][-4:]
    assert order in (["x1", "x1~reply", "x2", "x2~reply"], ["x2", "x2~reply", "x1", "x1~reply"])
    assert all(m["metadata"]["status"] == "complete" for m in messages)
    earlier, later = ("alice", "carol") if order[0] == "x1" else ("carol", "alice")
    # The one that waited said so at once, then streamed its own reply after the other's.
    waited = got[later]
    assert waited[0]["type"] == "data-waiting" and waited[0]["data"]["ahead"] == 1
    assert waited[0]["transient"] is True
    assert not any(c["type"] == "data-waiting" for c in got[earlier] if isinstance(c, dict))
    # Its call had the other's exchange in context, signed by the team's names.
    contents = calls[1]["body"]["contents"]
    said = [p.get("text", "") for c in contents for p in c["parts"]]
    first_text = "first" if earlier == "alice" else "[Carol] second"
    assert any(first_text in t for t in said[:-1])
    assert any(t.startswith("Echo:") for t in said[:-1])  # the earlier reply, whole
    assert text_of(got[earlier]) and text_of(waited)


def test_past_the_bound_a_message_gets_429_step_busy_and_nothing_is_stored(instances, standin, db):
    session = team_session(instances, standin)
    a, b = instances
    long = "[[standin chunks=40 delay_ms=100]]"
    first = send(a, "alice", chat_body(f"long {long}", "y1", session=session))
    assert first.status_code == 200
    waiting = [
        send(b, "carol", chat_body("wait one", "y2", session=session)),
        send(a, "alice", chat_body("wait two", "y3", session=session)),
    ]
    assert all(w.status_code == 200 for w in waiting)
    refused = send(b, "carol", chat_body("one too many", "y4", session=session))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "step_busy"
    assert int(refused.headers["Retry-After"]) > 0
    path = f"sessions/{session}/steps/empathize/messages"
    assert not db.document(f"{path}/y4").get().exists
    stored = {d.id: d.to_dict()["status"] for d in db.collection(path).stream()}
    assert stored["y2~reply"] == stored["y3~reply"] == "queued"
    texts = [text_of(sse_chunks(r.content)) for r in (first, *waiting)]
    assert texts[1:] == ["Echo: [Carol] wait one", "Echo: wait two"]
    assert len(standin.model_requests()) == 3


def test_a_member_removed_mid_stream_stops_hearing_it_and_the_reply_is_kept(instances, standin, db):
    session = team_session(instances, standin)
    a, b = instances
    response = send(
        b, "carol", chat_body("tell me [[standin chunks=60 delay_ms=100]]", "z1", session=session)
    )
    assert response.status_code == 200
    lines = response.iter_lines()
    for line in lines:
        if b'"text-delta"' in line:
            break
    removed = requests.delete(f"{a.url}/sessions/{session}/members/carol", headers=as_("alice"))
    assert removed.status_code == 200
    chunks = sse_chunks(b"\n\n".join(lines))
    assert {"type": "error", "errorText": "You are no longer in this session."} in chunks
    path = f"sessions/{session}/steps/empathize/messages/z1~reply"
    assert db.document(path).get().to_dict()["status"] == "streaming"  # it ended first
    reply = support.wait_for(
        lambda: (d := db.document(path).get().to_dict()) and d["status"] != "streaming" and d,
        timeout=20,
    )
    assert reply["status"] == "complete"  # what is stored is kept, whole
    assert reply["parts"][0]["text"].startswith("Echo: [Carol] tell me")
