"""The Gemini stand-in must fool the real google-genai client, or every test built on it lies.

These tests drive the stand-in only through the SDK (and raw HTTP where the SDK hides the wire),
so a change in either the stand-in or google-genai that breaks the contract shows up here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import errors, types

STANDIN = Path(__file__).resolve().parents[1] / "standin" / "gemini_standin.py"
MODEL = "gemini-2.5-flash"


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None):
    """Plain HTTP for the control API and for wire details the SDK would hide."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def standin_url() -> Iterator[str]:
    command = [sys.executable, str(STANDIN), "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            line = process.stdout.readline() if process.stdout else ""
            assert line.startswith("READY http://"), f"stand-in did not start: {line!r}"
            yield line.split()[1]
        finally:
            process.terminate()
            assert process.wait(timeout=5) == 0


@pytest.fixture(autouse=True)
def fresh_standin(standin_url: str) -> None:
    status, _, _ = call(f"{standin_url}/_standin/requests", "DELETE")
    assert status == 200


@pytest.fixture(scope="module")
def client(standin_url: str) -> Iterator[genai.Client]:
    # One client for the module: building one costs ~0.2 s (TLS contexts), most of the runtime.
    shared = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=standin_url))
    yield shared
    shared.close()


def recorded(url: str) -> list[dict[str, Any]]:
    return json.loads(call(f"{url}/_standin/requests")[2])["requests"]


def stream(client: genai.Client, contents: Any) -> list[types.GenerateContentResponse]:
    return list(client.models.generate_content_stream(model=MODEL, contents=contents))


def test_streamed_reply_echoes_the_message_in_three_chunks_and_ends_with_usage(client):
    chunks = stream(client, "Hello")

    assert "".join(c.text for c in chunks) == "Echo: Hello"
    assert len(chunks) == 3
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None, None]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.usage_metadata is None for c in chunks[:-1])
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (2, 3)
    assert usage.total_token_count == 5
    assert chunks[-1].model_version == MODEL


def test_directive_sets_chunk_count_and_is_not_echoed(client):
    chunks = stream(client, "Hi there [[standin chunks=5]]")

    assert [c.text for c in chunks] == ["Ech", "o: ", "Hi ", "the", "re"]


def test_short_reply_gives_fewer_chunks_never_an_empty_one(client):
    chunks = stream(client, "ab [[standin chunks=50]]")

    assert [c.text for c in chunks] == list("Echo: ab")


def test_words_knob_appends_filler_words(client):
    chunks = stream(client, "long [[standin words=4 chunks=2]]")

    assert "".join(c.text for c in chunks) == "Echo: long w1 w2 w3 w4"
    assert len(chunks) == 2


def test_reply_echoes_the_last_user_turn_of_a_conversation(client):
    history = [
        types.Content(role="user", parts=[types.Part(text="first")]),
        types.Content(role="model", parts=[types.Part(text="Echo: first")]),
        types.Content(role="user", parts=[types.Part(text="sec"), types.Part(text="ond")]),
    ]

    assert "".join(c.text for c in stream(client, history)) == "Echo: second"


def test_generate_content_returns_the_whole_reply_at_once(client):
    response = client.models.generate_content(model=MODEL, contents="Hello")

    assert response.text == "Echo: Hello"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata.total_token_count == 5


# google-genai's own class, not ours: keep a -W error run from failing on it.
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
def test_async_client_streams_through_its_aiohttp_transport(client):
    async def collect() -> list[str]:
        try:
            replies = await client.aio.models.generate_content_stream(model=MODEL, contents="Hi")
            return [chunk.text async for chunk in replies]
        finally:
            await client.aio.aclose()  # its session belongs to this event loop only

    assert asyncio.run(collect()) == ["Ech", "o: ", "Hi"]


def test_sse_framing_is_one_line_json_events_separated_by_crlf(standin_url):
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    status, headers, raw = call(
        f"{standin_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        "POST",
        body,
        {"x-goog-api-key": "k", "Content-Type": "application/json"},
    )

    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = raw.decode().split("\r\n\r\n")
    assert events[-1] == ""
    assert all(e.startswith("data: {") and "\n" not in e for e in events[:-1])
    assert len(events[:-1]) == 3


def test_sdk_retry_gets_past_a_429_with_exactly_two_requests(standin_url):
    retrying = genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(
            base_url=standin_url,
            retry_options=types.HttpRetryOptions(
                attempts=3, initial_delay=0.01, max_delay=0.05, jitter=0
            ),
        ),
    )

    chunks = stream(retrying, "Hi [[standin status=429 times=1 retry_after=1]]")

    assert "".join(c.text for c in chunks) == "Echo: Hi"
    assert len(recorded(standin_url)) == 2


def test_status_500_without_retry_raises_server_error(client, standin_url):
    with pytest.raises(errors.ServerError) as caught:
        stream(client, "Hi [[standin status=500]]")

    assert caught.value.code == 500
    assert caught.value.status == "INTERNAL"
    assert len(recorded(standin_url)) == 1


def test_429_carries_retry_after_header_and_retry_info(client):
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model=MODEL, contents="Hi [[standin status=429 retry_after=7]]"
        )

    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.details["error"]["details"][0]["retryDelay"] == "7s"


def test_times_limits_a_fault_to_the_first_requests_with_that_directive(client):
    prompt = "Hi [[standin status=503 times=2]]"
    for _ in range(2):
        with pytest.raises(errors.ServerError):
            client.models.generate_content(model=MODEL, contents=prompt)

    assert client.models.generate_content(model=MODEL, contents=prompt).text == "Echo: Hi"


def test_fail_next_fails_the_next_requests_in_order(client, standin_url):
    call(f"{standin_url}/_standin/fail_next", "POST", {"statuses": [429, 503], "retry_after": 1})

    codes = []
    for _ in range(2):
        with pytest.raises(errors.APIError) as caught:
            client.models.generate_content(model=MODEL, contents="Hi")
        codes.append(caught.value.code)

    assert codes == [429, 503]
    assert client.models.generate_content(model=MODEL, contents="Hi").text == "Echo: Hi"


def test_cut_stream_yields_k_chunks_then_raises_from_the_transport(client):
    received = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for chunk in client.models.generate_content_stream(
            model=MODEL, contents="Hello [[standin chunks=5 cut_after=2]]"
        ):
            received.append(chunk.text)

    assert received == ["Ech", "o:"]


def test_blocked_prompt_has_block_reason_and_no_candidates(client):
    chunks = stream(client, "Hi [[standin block=prompt]]")

    assert len(chunks) == 1
    assert chunks[0].candidates is None
    assert chunks[0].prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert chunks[0].usage_metadata.prompt_token_count > 0


def test_blocked_reply_stops_with_safety_after_partial_text(client):
    chunks = stream(client, "Hello [[standin block=reply]]")

    final = chunks[-1].candidates[0]
    assert final.finish_reason == types.FinishReason.SAFETY
    assert final.content is None
    assert final.safety_ratings
    assert "".join(c.text for c in chunks[:-1]) == "Echo: He"


def test_finish_knob_ends_a_full_reply_with_max_tokens(client):
    chunks = stream(client, "Hi [[standin finish=MAX_TOKENS]]")

    assert "".join(c.text or "" for c in chunks) == "Echo: Hi"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_timing_knobs_pace_the_stream(client):
    started = time.monotonic()
    arrivals = []
    prompt = "Hello [[standin first_delay_ms=100 stall_ms=100 delay_ms=50]]"
    for _ in client.models.generate_content_stream(model=MODEL, contents=prompt):
        arrivals.append(time.monotonic() - started)

    # Lower bounds from the start only: client overhead can delay a chunk, never hasten it.
    assert arrivals[0] >= 0.1
    assert arrivals[1] >= 0.1 + 0.1 + 0.05  # the stall comes on top of the normal delay
    assert arrivals[2] >= 0.1 + 0.1 + 0.05 + 0.05


def test_empty_parts_are_refused_with_400(client):
    with pytest.raises(errors.ClientError) as caught:
        stream(client, [types.Content(role="user", parts=[])])

    assert caught.value.code == 400
    assert "contents.parts must not be empty" in caught.value.message


def test_empty_text_part_is_refused_with_400(client):
    history = [
        types.Content(role="user", parts=[types.Part(text="Hi")]),
        types.Content(role="model", parts=[types.Part(text="")]),
        types.Content(role="user", parts=[types.Part(text="again")]),
    ]
    with pytest.raises(errors.ClientError) as caught:
        stream(client, history)

    assert caught.value.code == 400
    assert "contents[1].parts[0]" in caught.value.message


def test_unknown_role_is_refused_with_400(client):
    with pytest.raises(errors.ClientError) as caught:
        stream(client, [types.Content(role="assistant", parts=[types.Part(text="Hi")])])

    assert caught.value.status == "INVALID_ARGUMENT"


def test_misspelt_knob_is_refused_rather_than_ignored(client):
    with pytest.raises(errors.ClientError) as caught:
        stream(client, "Hi [[standin chunk=5]]")

    assert "chunk" in caught.value.message


def test_missing_api_key_is_403_permission_denied(standin_url):
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    status, _, raw = call(f"{standin_url}/v1/models/{MODEL}:generateContent", "POST", body)

    assert status == 403
    assert json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"


def test_recording_keeps_the_request_but_never_the_api_key(client, standin_url):
    stream(client, "Hello")

    (request,) = recorded(standin_url)
    assert request["method"] == "POST"
    assert request["path"] == f"/v1/models/{MODEL}:streamGenerateContent"
    assert request["query"] == {"alt": "sse"}
    assert request["body"]["contents"][0]["parts"][0]["text"] == "Hello"
    assert request["headers"]["x-goog-api-key"] == "***"
    assert "test-key" not in json.dumps(request)


def test_config_sets_defaults_that_a_directive_overrides(client, standin_url):
    call(f"{standin_url}/_standin/config", "POST", {"chunks": 4})

    assert len(stream(client, "Hello")) == 4
    assert len(stream(client, "Hello [[standin chunks=2]]")) == 2


def test_config_refuses_unknown_knobs(standin_url):
    status, _, _ = call(f"{standin_url}/_standin/config", "POST", {"bogus": 1})

    assert status == 400


def test_reset_clears_config_fault_queue_and_recording(client, standin_url):
    call(f"{standin_url}/_standin/config", "POST", {"status": 500})
    call(f"{standin_url}/_standin/fail_next", "POST", {"statuses": [429]})
    call(f"{standin_url}/_standin/requests", "DELETE")

    assert client.models.generate_content(model=MODEL, contents="Hi").text == "Echo: Hi"
    assert len(recorded(standin_url)) == 1


def test_vertex_style_path_is_served(standin_url):
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    path = f"/v1/projects/p/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
    status, _, raw = call(f"{standin_url}{path}", "POST", body, {"Authorization": "Bearer t"})

    assert status == 200
    assert json.loads(raw)["candidates"][0]["content"]["parts"][0]["text"] == "Echo: Hi"


def test_health_answers_ok(standin_url):
    status, _, raw = call(f"{standin_url}/_standin/health")

    assert (status, raw) == (200, b"ok")
