"""Nothing lost, nothing twice: disconnects, re-sends, regenerate, edits, upstream faults."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import support
from tests.support import chat_body, function_env, sse_chunks, text_of, wait_for

MESSAGES = "sessions/s1/steps/empathize/messages"


def doc(db, message_id: str, path: str = MESSAGES) -> dict | None:
    snap = db.document(f"{path}/{message_id}").get()
    return snap.to_dict() if snap.exists else None


def ids(db, path: str = MESSAGES) -> list[str]:
    return [d.id for d in db.collection(path).order_by("createdAt").stream()]


def post_raw(url: str, body: dict) -> socket.socket:
    """An HTTP/1.1 POST on a bare socket, so a test can hang up at any byte."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def post_json(url: str, body: dict) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url + "/",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- Disconnects ----------------------------------------------------------------------------


def test_replies_are_stored_complete_whenever_the_client_hangs_up(live_function, db):
    """25 trials, each hanging up after a random number of bytes (0 = right after sending),
    each in a session of its own (in one step, they would wait for each other's turns)."""
    rng = random.Random(20261125)
    trials = 25
    for i in range(trials):
        text = f"trial {i} [[standin chunks=8 delay_ms=15]]"
        sock = post_raw(live_function.url, chat_body(text, f"h{i}", session=f"hang{i}"))
        budget = rng.choice([0, 1, 50, 200, 400, 700, 1000, 1500])
        received = 0
        while received < budget:
            data = sock.recv(min(256, budget - received))
            if not data:
                break
            received += len(data)
        sock.close()
    for i in range(trials):
        path = f"sessions/hang{i}/steps/empathize/messages"
        reply = wait_for(
            lambda i=i, path=path: (
                (d := doc(db, f"h{i}~reply", path)) and d["status"] != "streaming" and d
            )
        )
        assert reply["status"] == "complete", i
        assert reply["parts"] == [{"type": "text", "text": f"Echo: trial {i}"}]
        assert doc(db, f"h{i}", path)["parts"][0]["text"].startswith(f"trial {i}")
        assert len(ids(db, path)) == 2


def test_partial_text_is_checkpointed_while_streaming(make_app, db):
    client = make_app(CHECKPOINT_SECONDS="0.1").test_client()
    response = client.post("/", json=chat_body("slow [[standin chunks=20 delay_ms=60]]"))
    partial = wait_for(
        lambda: (d := doc(db, "m1~reply")) and d["parts"] and d["status"] == "streaming" and d
    )
    final = text_of(sse_chunks(response.data))
    assert final == "Echo: slow"
    assert final.startswith(partial["parts"][0]["text"])
    assert len(partial["parts"][0]["text"]) < len(final)
    assert doc(db, "m1~reply")["status"] == "complete"


def test_a_reply_stuck_in_streaming_shows_as_interrupted_with_its_partial_text(
    emulator, standin_service, db
):
    """Kill the instance mid-reply: the checkpoint survives and history calls it interrupted."""
    env = function_env(emulator, standin_service, CHECKPOINT_SECONDS="0.1", LEASE_SECONDS="1")
    function = support.start_function(env)
    try:
        sock = post_raw(function.url, chat_body("doomed [[standin chunks=30 delay_ms=100]]"))
        wait_for(lambda: (d := doc(db, "m1~reply")) and d["parts"])
        os.killpg(function.process.pid, signal.SIGKILL)
        sock.close()
    finally:
        function.stop()
    partial = doc(db, "m1~reply")
    assert partial["status"] == "streaming"
    time.sleep(1.2)
    function = support.start_function(env)
    try:
        with urllib.request.urlopen(
            f"{function.url}{MESSAGES.replace('sessions', '/sessions')}"
        ) as response:
            messages = json.load(response)["messages"]
    finally:
        function.stop()
    reply = messages[-1]
    assert reply["metadata"]["status"] == "interrupted"
    assert reply["parts"] == partial["parts"]
    assert "Echo: doomed".startswith(reply["parts"][0]["text"])


def test_a_retry_after_a_crash_takes_the_reply_over_and_gets_it_whole(
    emulator, standin_service, db
):
    """SIGKILL mid-reply, then the user re-sends: the lease lapses and the retry generates the
    reply again, stored once, complete, with none of the dead generation's text relayed."""
    env = function_env(emulator, standin_service, CHECKPOINT_SECONDS="0.2")
    body = chat_body("again [[standin words=40 chunks=20 delay_ms=100]]", "k1")
    function = support.start_function(env)
    try:
        sock = post_raw(function.url, body)
        wait_for(lambda: (d := doc(db, "k1~reply")) and d["parts"])
        os.killpg(function.process.pid, signal.SIGKILL)
        sock.close()
    finally:
        function.stop()
    dead = doc(db, "k1~reply")
    function = support.start_function(env)
    try:
        started = time.monotonic()
        status, raw = post_json(function.url, body)
        elapsed = time.monotonic() - started
    finally:
        function.stop()
    full = "Echo: again " + " ".join(f"w{i}" for i in range(1, 41))
    assert status == 200
    assert text_of(sse_chunks(raw)) == full
    assert elapsed < 15
    reply = doc(db, "k1~reply")
    assert (reply["status"], reply["parts"]) == ("complete", [{"type": "text", "text": full}])
    assert reply["generation"] != dead["generation"]
    assert ids(db) == ["k1", "k1~reply"]


def test_sigterm_checkpoints_replies_in_flight(emulator, standin_service, db):
    # With checkpoints a minute apart, only the SIGTERM handler can have written the text.
    env = function_env(emulator, standin_service, CHECKPOINT_SECONDS="60")
    function = support.start_function(env)
    try:
        sock = post_raw(
            function.url, chat_body("long [[standin words=100 chunks=40 delay_ms=100]]")
        )
        sock.recv(4096)
        time.sleep(0.6)
        assert doc(db, "m1~reply")["parts"] == []
        os.kill(function.process.pid, signal.SIGTERM)  # gunicorn's master, as Cloud Run does
        reply = wait_for(lambda: (d := doc(db, "m1~reply")) and d["parts"] and d, timeout=2)
        sock.close()
    finally:
        function.stop()
    assert reply["status"] == "streaming", function.output
    full = "Echo: long " + " ".join(f"w{i}" for i in range(1, 101))
    assert full.startswith(reply["parts"][0]["text"])
    assert any('"SIGTERM: replies in flight checkpointed"' in line for line in function.output)


# --- Idempotent turns -----------------------------------------------------------------------


def test_a_resend_during_generation_joins_it_instead_of_starting_another(client, db, standin):
    body = chat_body("twice [[standin chunks=10 delay_ms=40]]")
    first = client.post("/", json=body)
    second = client.post("/", json=body)
    assert text_of(sse_chunks(first.data)) == text_of(sse_chunks(second.data)) == "Echo: twice"
    assert len(standin.model_requests()) == 1
    assert ids(db) == ["m1", "m1~reply"]


def test_a_resend_to_another_instance_follows_the_generation_there(make_app, db, standin):
    first, second = make_app().test_client(), make_app().test_client()
    body = chat_body("elsewhere [[standin chunks=8 delay_ms=150]]")
    original = first.post("/", json=body)  # generating on the first instance
    follower = second.post("/", json=body)
    followed = sse_chunks(follower.data)
    assert text_of(followed) == "Echo: elsewhere" == text_of(sse_chunks(original.data))
    assert followed[0]["messageId"] == "m1~reply"
    assert followed[-2]["finishReason"] == "stop"
    assert len(standin.model_requests()) == 1
    assert ids(db) == ["m1", "m1~reply"]


def test_twenty_identical_posts_at_once_give_one_user_message_one_reply_one_model_call(
    live_function, db, standin
):
    # A session of its own: the module's function remembers s1 from tests whose data the
    # emulator reset has wiped, and a stale copy would cost one cancelled model call.
    body = chat_body("crowd [[standin chunks=5 delay_ms=30]]", session="crowd")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: post_json(live_function.url, body), range(20)))
    assert [status for status, _ in results] == [200] * 20
    assert {text_of(sse_chunks(raw)) for _, raw in results} == {"Echo: crowd"}
    assert len(standin.model_requests()) == 1
    path = "sessions/crowd/steps/empathize/messages"
    assert ids(db, path) == ["m1", "m1~reply"]
    assert doc(db, "m1~reply", path)["status"] == "complete"


def test_a_resend_after_a_failed_reply_tries_again(client, db, standin):
    standin.fail_next(500, 500, 500, 500)
    failed = client.post("/", json=chat_body("again"))
    assert failed.status_code == 503
    assert doc(db, "m1~reply")["status"] == "error"
    retried = client.post("/", json=chat_body("again"))
    assert text_of(sse_chunks(retried.data)) == "Echo: again"
    assert doc(db, "m1~reply")["status"] == "complete"
    assert ids(db) == ["m1", "m1~reply"]


def test_a_reused_message_id_with_other_text_is_a_conflict_and_writes_nothing(client, db):
    assert client.post("/", json=chat_body("original")).data
    before = {i: doc(db, i) for i in ids(db)}
    response = client.post("/", json=chat_body("different"))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "id_in_use"
    assert {i: doc(db, i) for i in ids(db)} == before


# --- Regenerate and edit --------------------------------------------------------------------


def test_regenerate_replaces_the_reply_in_place_with_the_context_before_it(client, db, standin):
    assert client.post("/", json=chat_body("one", "m1")).data
    assert client.post("/", json=chat_body("two", "m2")).data
    created = doc(db, "m2~reply")["createdAt"]
    standin.configure(words=3)
    history = [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "one"}]},
        {"id": "m1~reply", "role": "assistant", "parts": [{"type": "text", "text": "Echo: one"}]},
        {"id": "m2", "role": "user", "parts": [{"type": "text", "text": "two"}]},
    ]
    response = client.post(
        "/",
        json={
            **chat_body(),
            "messages": history,
            "trigger": "regenerate-message",
            "messageId": "m2~reply",
        },
    )
    chunks = sse_chunks(response.data)
    assert chunks[0]["messageId"] == "m2~reply"
    assert text_of(chunks) == "Echo: two w1 w2 w3"
    assert ids(db) == ["m1", "m1~reply", "m2", "m2~reply"]
    reply = doc(db, "m2~reply")
    assert reply["parts"][0]["text"] == "Echo: two w1 w2 w3"
    assert reply["createdAt"] == created
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["parts"][0]["text"] for c in contents] == ["one", "Echo: one", "two"]


def test_regenerate_of_an_unknown_reply_is_404_and_writes_nothing(client, db):
    assert client.post("/", json=chat_body("one")).data
    before = {i: doc(db, i) for i in ids(db)}
    response = client.post(
        "/",
        json={
            **chat_body("one"),
            "trigger": "regenerate-message",
            "messageId": "nope~reply",
        },
    )
    assert response.status_code == 404
    assert {i: doc(db, i) for i in ids(db)} == before


def test_edit_updates_the_message_and_drops_everything_after_it(client, db, standin):
    for i, text in enumerate(["one", "two", "three"], start=1):
        assert client.post("/", json=chat_body(text, f"m{i}")).data
    created = doc(db, "m2")["createdAt"]
    response = client.post("/", json={**chat_body("TWO", "m2"), "messageId": "m2"})
    assert text_of(sse_chunks(response.data)) == "Echo: TWO"
    assert ids(db) == ["m1", "m1~reply", "m2", "m2~reply"]
    assert doc(db, "m2")["parts"] == [{"type": "text", "text": "TWO"}]
    assert doc(db, "m2")["createdAt"] == created
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["parts"][0]["text"] for c in contents] == ["one", "Echo: one", "TWO"]


# --- Gemini faults --------------------------------------------------------------------------


def test_429_then_200_is_retried_before_the_first_byte(client, standin):
    standin.fail_next(429)
    response = client.post("/", json=chat_body("retry me"))
    assert response.status_code == 200
    assert text_of(sse_chunks(response.data)) == "Echo: retry me"
    assert len(standin.model_requests()) == 2


def test_retry_after_is_honoured(client, standin):
    standin.fail_next(503, retry_after=1)
    started = time.monotonic()
    response = client.post("/", json=chat_body("patience"))
    assert text_of(sse_chunks(response.data)) == "Echo: patience"
    assert time.monotonic() - started >= 1.0
    assert len(standin.model_requests()) == 2


def test_exhausted_retries_give_a_clean_503_and_keep_the_user_message(make_app, db, standin):
    client = make_app(GEMINI_RETRY_ATTEMPTS="3").test_client()
    standin.fail_next(429, 500, 503, retry_after=0)
    response = client.post("/", json=chat_body("busy"))
    assert response.status_code == 503
    assert response.get_json() == {
        "error": {
            "code": "model_unavailable",
            "message": "The assistant is busy right now. Please try again in a moment.",
        }
    }
    assert len(standin.model_requests()) == 3
    assert doc(db, "m1")["parts"][0]["text"] == "busy"
    assert doc(db, "m1~reply")["status"] == "error"
    history = client.get("/sessions/s1/steps/empathize/messages").get_json()["messages"]
    assert [m["id"] for m in history] == ["m1"]


def test_a_long_retry_after_is_passed_to_the_client_instead_of_waited(make_app, standin):
    client = make_app(GEMINI_RETRY_MAX_WAIT_SECONDS="2").test_client()
    standin.fail_next(429, retry_after=30)
    response = client.post("/", json=chat_body("later"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert len(standin.model_requests()) == 1


def test_a_refused_request_is_not_retried(client, standin):
    standin.fail_next(400)
    response = client.post("/", json=chat_body("bad"))
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "model_error"
    assert len(standin.model_requests()) == 1


def test_a_cut_mid_stream_ends_in_an_error_chunk_and_stores_the_partial_reply(client, db):
    response = client.post("/", json=chat_body("cut [[standin chunks=4 cut_after=2]]"))
    chunks = sse_chunks(response.data)
    assert chunks[-4:] == [
        {"type": "error", "errorText": "The reply was interrupted. Please try again."},
        {"type": "finish-step"},
        chunks[-2],
        "[DONE]",
    ]
    assert chunks[-2]["finishReason"] == "error"
    reply = doc(db, "m1~reply")
    assert reply["status"] == "error"
    assert reply["finishReason"] == "error"
    assert reply["parts"] == [{"type": "text", "text": text_of(chunks)}]
    assert text_of(chunks) and "Echo: cut".startswith(text_of(chunks))


@pytest.mark.parametrize(
    ("directive", "finish", "text"),
    [
        ("block=prompt", "content-filter", "I can't help with that message. Please rephrase it."),
        ("block=reply chunks=3", "content-filter", "Echo: b"),
        ("finish=MAX_TOKENS", "length", "Echo: b"),
    ],
)
def test_blocks_and_max_tokens_map_to_their_finish_reasons(client, db, directive, finish, text):
    response = client.post("/", json=chat_body(f"b [[standin {directive}]]"))
    chunks = sse_chunks(response.data)
    assert chunks[-2]["type"] == "finish"
    assert chunks[-2]["finishReason"] == finish
    assert not any(c["type"] == "error" for c in chunks if isinstance(c, dict))
    assert text.startswith(text_of(chunks)) and text_of(chunks)
    reply = doc(db, "m1~reply")
    assert (reply["status"], reply["finishReason"]) == ("complete", finish)


def test_a_blocked_exchange_is_left_out_of_later_contexts(client, standin):
    assert client.post("/", json=chat_body("bad [[standin block=prompt]]", "m1")).data
    assert client.post("/", json=chat_body("good", "m2")).data
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["role"] for c in contents] == ["user", "user"]


def test_an_upstream_stall_ends_the_reply_as_an_error(make_app, db):
    client = make_app(STALL_SECONDS="1.5").test_client()
    started = time.monotonic()
    response = client.post("/", json=chat_body("stall [[standin chunks=3 stall_ms=8000]]"))
    chunks = sse_chunks(response.data)
    assert time.monotonic() - started < 6.0
    assert {
        "type": "error",
        "errorText": "The reply took too long and was stopped. Please try again.",
    } in chunks
    assert doc(db, "m1~reply")["status"] == "error"


def test_keepalive_comments_flow_while_the_upstream_is_silent(make_app):
    client = make_app(KEEPALIVE_SECONDS="0.1").test_client()
    response = client.post("/", json=chat_body("wait [[standin chunks=2 stall_ms=600]]"))
    assert b": ping\n\n" in response.data
    assert text_of(sse_chunks(response.data)) == "Echo: wait"


# --- Firestore faults -----------------------------------------------------------------------


@pytest.fixture
def own_emulator():
    """An emulator of this test's own, free to be stopped or frozen."""
    service = support.start_firestore_emulator()
    yield service
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGCONT)
    service.stop()


def app_on(own_emulator, genai_client, **env):
    from flask import Flask, request
    from google.cloud import firestore

    from tests.support import BASE_ENV
    from workshop_chat.config import Config
    from workshop_chat.service import build

    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = own_emulator.url
    try:
        db = firestore.Client(project=support.PROJECT)
    finally:
        if previous is None:
            del os.environ["FIRESTORE_EMULATOR_HOST"]
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
    api = build(Config.from_env({**BASE_ENV, **env}), db=db, genai_client=genai_client)
    db.document("warm/up").set({})  # a cold emulator's first answers can take seconds
    api.turns.store.access.timeout = api.turns.store.access.ledger.timeout = 1.0
    app = Flask("own")
    app.api = api
    app.add_url_rule("/", "root", lambda: api(request), methods=["POST"])
    app.add_url_rule("/<path:rest>", "rest", lambda rest: api(request), methods=["GET"])
    return app.test_client(), db


def test_storage_down_gives_503_and_the_model_is_not_called(own_emulator, genai_client, standin):
    client, _ = app_on(own_emulator, genai_client)
    own_emulator.stop()
    response = client.post("/", json=chat_body("lost?"))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    assert standin.requests() == []


def test_usage_with_storage_down_is_503_not_nothing_spent(own_emulator, genai_client):
    client, _ = app_on(own_emulator, genai_client, USER_DAILY_TOKENS="1000")
    assert client.get("/usage").get_json()["usedTokens"] == 0
    own_emulator.stop()
    response = client.get("/usage")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"


def test_a_failed_final_write_is_retried(own_emulator, genai_client, standin):
    client, db = app_on(own_emulator, genai_client, CHECKPOINT_SECONDS="60")
    client.application.api.turns.store.access.timeout = 2.0
    response = client.post("/", json=chat_body("freeze [[standin chunks=2 delay_ms=300]]"))
    os.killpg(own_emulator.process.pid, signal.SIGSTOP)  # longer than one write may take
    thaw = threading.Timer(3.0, os.killpg, (own_emulator.process.pid, signal.SIGCONT))
    thaw.start()
    try:
        started = time.monotonic()
        chunks = sse_chunks(response.data)
        assert time.monotonic() - started > 2.0
    finally:
        thaw.join()
        os.killpg(own_emulator.process.pid, signal.SIGCONT)
    assert text_of(chunks) == "Echo: freeze"
    assert chunks[-2]["finishReason"] == "stop"
    assert doc(db, "m1~reply")["status"] == "complete"


def test_a_reply_that_cannot_be_stored_says_so_in_the_stream(own_emulator, genai_client, standin):
    client, _ = app_on(own_emulator, genai_client, CHECKPOINT_SECONDS="60")
    response = client.post("/", json=chat_body("gone [[standin chunks=2 delay_ms=300]]"))
    own_emulator.stop()
    chunks = sse_chunks(response.data)
    assert {"type": "error", "errorText": "The reply could not be saved. Please try again."} in (
        chunks
    )
    assert chunks[-2]["finishReason"] == "error"
