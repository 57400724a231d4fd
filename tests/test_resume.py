"""Resume a reply in flight after a reload, and a Stop that stops it: same and other instances."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests import support
from tests.support import Post, chat_body, sse_chunks, text_of, wait_for

STEP = "/sessions/s1/steps/empathize"
REPLY = "sessions/s1/steps/empathize/messages/m1~reply"
READER = support.ROOT / "tests" / "js" / "read-stream.mjs"


def stored(db) -> dict | None:
    snap = db.document(REPLY).get()
    return snap.to_dict() if snap.exists else None


def streaming_with_text(db) -> dict | None:
    reply = stored(db)
    return reply if reply and reply["status"] == "streaming" and reply["parts"] else None


SLOW = "slow [[standin words=30 chunks=30 delay_ms=100]]"
FULL = "Echo: slow " + " ".join(f"w{i}" for i in range(1, 31))


# --- Resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same instance", "another instance"])
def test_a_reply_in_flight_resumes_from_its_beginning(make_app, db, standin, where):
    generating = make_app(CHECKPOINT_SECONDS="0.2")
    reader = generating if where == "same instance" else make_app(CHECKPOINT_SECONDS="0.2")
    original = Post(generating.test_client(), SLOW)
    wait_for(lambda: streaming_with_text(db))
    response = reader.test_client().get(f"{STEP}/stream")
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    resumed = sse_chunks(response.data)
    first = original.join()
    assert resumed[0] == first[0]  # the same start: messageId m1~reply, same metadata
    assert text_of(resumed) == text_of(first) == FULL
    assert resumed[-2]["type"] == "finish" and resumed[-1] == "[DONE]"
    assert len(standin.model_requests()) == 1
    assert stored(db)["status"] == "complete"


def test_resume_after_the_reply_settled_is_204(client, db):
    assert text_of(sse_chunks(client.post("/", json=chat_body("done")).data)) == "Echo: done"
    response = client.get(f"{STEP}/stream")
    assert (response.status_code, response.data) == (204, b"")


def test_resume_of_an_unknown_session_is_404(client):
    response = client.get("/sessions/nobody/steps/empathize/stream")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


# --- Stop -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same instance", "another instance"])
def test_stop_ends_the_reply_with_the_text_so_far_and_closes_the_model_stream(
    make_app, db, standin, where
):
    generating = make_app(CHECKPOINT_SECONDS="0.2")
    stopper = generating if where == "same instance" else make_app(CHECKPOINT_SECONDS="0.2")
    original = Post(generating.test_client(), SLOW)
    wait_for(lambda: streaming_with_text(db))
    response = stopper.test_client().post(f"{STEP}/stop")
    assert (response.status_code, response.get_json()) == (200, {"stopped": 1})
    chunks = original.join()
    assert chunks[-2]["type"] == "finish"
    assert chunks[-2]["messageMetadata"]["status"] == "stopped"
    assert not any(c["type"] == "error" for c in chunks if isinstance(c, dict))
    reply = stored(db)
    assert reply["status"] == "stopped"
    text = reply["parts"][0]["text"]
    assert text == text_of(chunks) and FULL.startswith(text) and text != FULL
    # The model's response was closed, not read to its end.
    wait_for(lambda: standin.model_requests()[0].get("ended") == "client-closed")
    history = stopper.test_client().get(f"{STEP}/messages").get_json()["messages"]
    assert history[-1]["metadata"]["status"] == "stopped"
    assert history[-1]["parts"] == [{"type": "text", "text": text}]


def test_stop_takes_effect_while_the_model_is_silent(make_app, db, standin):
    app = make_app(CHECKPOINT_SECONDS="0.2")
    original = Post(app.test_client(), "think [[standin chunks=3 stall_ms=30000]]")
    wait_for(lambda: streaming_with_text(db))
    started = time.monotonic()
    assert app.test_client().post(f"{STEP}/stop").get_json() == {"stopped": 1}
    chunks = original.join()
    assert time.monotonic() - started < 20  # far sooner than the 30 s silence would end
    assert chunks[-2]["messageMetadata"]["status"] == "stopped"
    assert stored(db)["status"] == "stopped"
    wait_for(lambda: standin.model_requests()[0].get("ended") == "client-closed", timeout=5)


def test_stop_with_nothing_in_flight_answers_2xx_and_writes_nothing(client, db):
    assert client.post("/", json=chat_body("done")).data
    before = {d.id: (d.to_dict(), d.update_time) for d in db.collection(REPLY[:-9]).stream()}
    response = client.post(f"{STEP}/stop")
    assert (response.status_code, response.get_json()) == (200, {"stopped": 0})
    after = {d.id: (d.to_dict(), d.update_time) for d in db.collection(REPLY[:-9]).stream()}
    assert after == before


def test_a_stopped_reply_is_context_and_a_resend_retries_it(make_app, db, standin):
    app = make_app(CHECKPOINT_SECONDS="0.2")
    client = app.test_client()
    original = Post(client, SLOW)
    wait_for(lambda: streaming_with_text(db))
    client.post(f"{STEP}/stop")
    partial = text_of(original.join())
    assert client.post("/", json=chat_body("next", "m2")).data
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["parts"][0]["text"] for c in contents] == [SLOW, partial, "next"]
    again = client.post("/", json=chat_body(SLOW))  # a re-send of the stopped message
    assert text_of(sse_chunks(again.data)) == FULL
    assert stored(db)["status"] == "complete"


# --- The AI SDK reads resumed and stopped streams ---------------------------------------------


def read_with_ai_sdk(package: str, url: str, **options) -> subprocess.Popen:
    if not (support.ROOT / "tests" / "js" / "node_modules" / package).exists():
        pytest.fail("npm packages missing: run ./test.sh (it runs npm ci in tests/js)")
    return subprocess.Popen(
        ["node", str(READER), package, url, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=READER.parent,
    )


def states_of(process: subprocess.Popen) -> list[dict]:
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def post_json(url: str, path: str) -> dict:
    import urllib.request

    request = urllib.request.Request(url + path, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.parametrize("package", ["ai", "ai-v5"])
def test_the_ai_sdk_reads_a_resumed_and_a_stopped_stream(live_function, db, package):
    session = f"sdk-{package}"
    step = f"/sessions/{session}/steps/empathize"
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": SLOW}]}
    original = read_with_ai_sdk(
        package, live_function.url + "/", sessionId=session, stepId="empathize", messages=[user]
    )
    path = f"sessions/{session}/steps/empathize/messages/u1~reply"
    wait_for(lambda: (d := db.document(path).get().to_dict()) and d.get("parts"))
    resumed = read_with_ai_sdk(package, "", resume=live_function.url + step + "/stream")
    first_state = json.loads(resumed.stdout.readline())  # the resumed stream is being read
    assert first_state["id"] == "u1~reply"
    assert post_json(live_function.url, step + "/stop") == {"stopped": 1}
    for states in (states_of(original), [first_state, *states_of(resumed)]):
        assert states[-1] == {"done": True}
        final = states[-2]
        assert final["id"] == "u1~reply" and final["metadata"]["status"] == "stopped"
        text = "".join(p["text"] for p in final["parts"] if p["type"] == "text")
        assert text == db.document(path).get().to_dict()["parts"][0]["text"]
        assert FULL.startswith(text) and text != FULL


def test_one_user_may_follow_only_a_few_streams_at_once(make_app, db, standin):
    from workshop_chat.web.admission import FOLLOWERS_PER_USER

    app = make_app(CHECKPOINT_SECONDS="0.2")
    client = app.test_client()
    original = Post(client, SLOW)
    wait_for(lambda: streaming_with_text(db))
    held = [client.get(f"{STEP}/stream", buffered=False) for _ in range(FOLLOWERS_PER_USER)]
    assert [r.status_code for r in held] == [200] * FOLLOWERS_PER_USER
    refused = client.get(f"{STEP}/stream")
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_streams"
    held.pop().close()  # a follower that goes gives its place back
    again = client.get(f"{STEP}/stream", buffered=False)
    assert again.status_code == 200
    assert text_of(sse_chunks(b"".join(again.response))) == FULL
    for response in held:
        response.close()
    original.join()
    assert len(standin.model_requests()) == 1
