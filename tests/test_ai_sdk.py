"""The AI SDK's own client code reads the function's live stream and builds the message."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from tests import support

READER = support.ROOT / "tests" / "js" / "read-stream.mjs"


def read_with_ai_sdk(package: str, url: str, **options) -> list[dict]:
    if not (support.ROOT / "tests" / "js" / "node_modules" / package).exists():
        pytest.fail("npm packages missing: run ./test.sh (it runs npm ci in tests/js)")
    done = subprocess.run(
        ["node", str(READER), package, url, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=READER.parent,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("package", ["ai", "ai-v5"])
def test_the_ai_sdk_reader_accepts_the_stream_and_yields_the_stored_message(
    live_function, db, standin, package
):
    standin.configure(chunks=4)
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi there"}]}
    states = read_with_ai_sdk(
        package, live_function.url + "/", sessionId="s1", stepId="ideate", messages=[user]
    )
    assert states[-1] == {"done": True}
    final = states[-2]
    assert final["id"] == "u1~reply"
    assert final["role"] == "assistant"
    texts = [p["text"] for p in final["parts"] if p["type"] == "text"]
    assert texts == ["Echo: Hi there"]
    assert final["metadata"]["model"] == "gemini-2.5-flash"
    assert final["metadata"]["usage"]["totalTokens"] > 0
    # The message grew over several states, and what it became is what was stored.
    assert len(states) >= 4
    reply = db.document("sessions/s1/steps/ideate/messages/u1~reply").get().to_dict()
    assert reply["parts"] == [{"type": "text", "text": "Echo: Hi there"}]
    assert reply["status"] == "complete"


def test_the_ai_sdk_sees_an_error_chunk_when_the_upstream_stream_is_cut(live_function, db, standin):
    user = {
        "id": "u2",
        "role": "user",
        "parts": [{"type": "text", "text": "Cut me [[standin chunks=4 cut_after=2]]"}],
    }
    states = read_with_ai_sdk(
        "ai", live_function.url + "/", sessionId="s1", stepId="ideate", messages=[user]
    )
    assert states[-1] == {"error": "The reply was interrupted. Please try again."}
    reply = db.document("sessions/s1/steps/ideate/messages/u2~reply").get().to_dict()
    assert reply["status"] == "error"
    assert reply["parts"][0]["text"] == "Echo: Cut "[: len(reply["parts"][0]["text"])]
    assert reply["parts"][0]["text"]


@pytest.mark.parametrize("package", ["ai", "ai-v5"])
def test_the_ai_sdk_builds_tool_parts_and_they_are_what_the_history_returns(
    live_function, db, standin, package
):
    text = "Pagers [[standin tool=add_board_items rounds=2]]"
    user = {"id": "t1", "role": "user", "parts": [{"type": "text", "text": text}]}
    states = read_with_ai_sdk(
        package, live_function.url + "/", sessionId="s1", stepId="ideate", messages=[user]
    )
    assert states[-1] == {"done": True}
    final = states[-2]
    kinds = [p["type"] for p in final["parts"]]
    assert kinds == [
        "step-start",
        "tool-add_board_items",
        "step-start",
        "tool-add_board_items",
        "step-start",
        "text",
    ]
    calls = [p for p in final["parts"] if p["type"] == "tool-add_board_items"]
    assert [c["state"] for c in calls] == ["output-available", "output-available"]
    ids = sorted(i for c in calls for i in c["output"]["ids"])
    assert ids == sorted(d.id for d in db.collection("sessions/s1/board").stream())
    # The history gives useChat the same message (the parts' keys the client left unset aside).
    history = json.loads(
        urllib.request.urlopen(live_function.url + "/sessions/s1/steps/ideate/messages").read()
    )
    stored = history["messages"][-1]
    client_side = [
        {k: v for k, v in p.items() if v is not None and (k, p["type"]) != ("state", "text")}
        for p in final["parts"]
    ]
    assert client_side == stored["parts"]


APPROVE = support.ROOT / "tests" / "js" / "approve.mjs"


@pytest.mark.parametrize("approved", [True, False])
def test_the_ai_sdk_chat_answers_an_approval_and_the_same_reply_carries_on(
    live_function, db, standin, approved
):
    options = {"sessionId": "s1", "stepId": "ideate", "approved": approved, "reason": "why not"}
    done = subprocess.run(
        ["node", str(APPROVE), live_function.url + "/", json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=APPROVE.parent,
    )
    assert done.returncode == 0, done.stderr
    stages = {s["stage"]: s for s in map(json.loads, done.stdout.splitlines())}
    assert stages["asked"]["status"] == "ready"
    answered = stages["answered"]
    assert answered["status"] == "ready", answered["error"]
    reply = answered["messages"][-1]
    assert [m["role"] for m in answered["messages"]] == ["user", "assistant"] * 2
    call = next(p for p in reply["parts"] if p["type"] == "tool-remove_board_item")
    left = [d.id for d in db.collection("sessions/s1/board").stream()]
    if approved:
        assert call["state"] == "output-available" and left == []
        assert call["approval"]["approved"] is True
    else:
        assert call["state"] == "output-denied" and len(left) == 1
        assert call["approval"] == {
            "id": call["approval"]["id"],
            "approved": False,
            "reason": "why not",
        }
    texts = [p["text"] for p in reply["parts"] if p["type"] == "text"]
    assert texts[-1].startswith("Echo: Drop it | remove_board_item -> ")
    # What the chat holds is what the history gives back.
    history = json.loads(
        urllib.request.urlopen(live_function.url + "/sessions/s1/steps/ideate/messages").read()
    )
    stored = history["messages"][-1]
    client_side = [
        {k: v for k, v in p.items() if v is not None and (k, p["type"]) != ("state", "text")}
        for p in reply["parts"]
    ]
    assert client_side == stored["parts"]


@pytest.mark.parametrize("package", ["ai", "ai-v5"])
def test_the_ai_sdk_reads_a_reply_that_waited_its_turn(live_function, db, standin, package):
    """Its stream opens with a transient data-waiting part, which a strict 5.0 reader takes
    too; the message it builds keeps none of it and is what the store holds."""
    import threading

    import requests

    first = {"id": "w1", "role": "user", "parts": [{"type": "text", "text": "slow"}]}
    slow = {**first, "parts": [{"type": "text", "text": "slow [[standin chunks=20 delay_ms=60]]"}]}
    body = {"id": "chat-1", "sessionId": "sw", "stepId": "ideate", "messages": [slow]}
    ahead = threading.Thread(
        target=lambda: requests.post(live_function.url + "/", json=body, timeout=30).content
    )
    ahead.start()
    support.wait_for(lambda: db.document("sessions/sw/steps/ideate/messages/w1~reply").get().exists)
    user = {"id": "w2", "role": "user", "parts": [{"type": "text", "text": "Next"}]}
    states = read_with_ai_sdk(
        package, live_function.url + "/", sessionId="sw", stepId="ideate", messages=[user]
    )
    ahead.join(30)
    assert states[-1] == {"done": True}
    final = states[-2]
    assert final["id"] == "w2~reply"
    assert [p["type"] for p in final["parts"]] == ["step-start", "text"]
    assert final["parts"][1]["text"] == "Echo: Next"
    stored = db.document("sessions/sw/steps/ideate/messages/w2~reply").get().to_dict()
    assert stored["status"] == "complete" and stored["parts"] == [
        {"type": "text", "text": "Echo: Next"}
    ]
    # It was asked after the slow reply settled, with it in context.
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["parts"][0]["text"] for c in contents][-3:-1] == [
        "slow [[standin chunks=20 delay_ms=60]]",
        "Echo: slow",
    ]
