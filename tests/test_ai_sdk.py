"""The AI SDK's own client code reads the function's live stream and builds the message."""

from __future__ import annotations

import json
import subprocess

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
