"""Gemini through the real google-genai client and the stand-in: retries, finishes, faults."""

from __future__ import annotations

import pytest

from tests.support import collect
from workshop_chat.chat.errors import ModelFailed, ModelUnavailable
from workshop_chat.chat.ports import ModelDone, ModelText
from workshop_chat.cloud.gemini import Gemini, Generation, Retries, finish_reason
from workshop_chat.config import Config


def gemini_of(client, name, **options) -> Gemini:
    """The adapter with the configuration's defaults for what a test leaves out."""
    config = Config.from_env({"GOOGLE_CLOUD_PROJECT": "demo-x", "GEMINI_API_KEY": "k"})
    retries = Retries(
        config.retry_attempts,
        config.retry_initial_delay_seconds,
        config.retry_max_wait_seconds,
    )
    options = {"retries": retries, "summary_model": config.summary_model, **options}
    return Gemini(client, name, **options)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def gemini(genai_client, sleeps) -> Gemini:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return gemini_of(genai_client, "gemini-test", retries=Retries(3, 0.01, 10), sleep=sleep)


def run(gemini: Gemini, text: str = "Hi") -> tuple[str, ModelDone]:
    items = collect(gemini, "be brief", [("user", text)])
    assert isinstance(items[-1], ModelDone)
    assert all(isinstance(i, ModelText) for i in items[:-1])
    return "".join(i.text for i in items[:-1]), items[-1]


def test_a_reply_streams_text_then_the_mapped_finish_with_usage(gemini, standin):
    text, done = run(gemini, "Hello")
    assert text == "Echo: Hello"
    assert done == ModelDone(
        "stop", {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}, "gemini-test"
    )
    body = standin.model_requests()[0]["body"]
    assert body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]


def test_429_then_200_is_retried_once_with_backoff(gemini, standin, sleeps):
    standin.fail_next(429)
    assert run(gemini)[0] == "Echo: Hi"
    assert len(standin.model_requests()) == 2
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.01


def test_retry_after_sets_the_wait(gemini, standin, sleeps):
    standin.fail_next(503, 500, retry_after=2)
    assert run(gemini)[0] == "Echo: Hi"
    assert sleeps == [2.0, 2.0]


def test_attempts_are_bounded(gemini, standin, sleeps):
    standin.fail_next(500, 500, 500, 500)
    with pytest.raises(ModelUnavailable):
        run(gemini)
    assert len(standin.model_requests()) == 3
    assert len(sleeps) == 2


def test_total_wait_is_bounded_and_the_retry_after_is_passed_on(gemini, standin, sleeps):
    standin.fail_next(429, retry_after=60)
    with pytest.raises(ModelUnavailable) as error:
        run(gemini)
    assert error.value.retry_after == 60
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(gemini, standin, sleeps, status):
    standin.fail_next(status)
    with pytest.raises(ModelFailed):
        run(gemini)
    assert len(standin.model_requests()) == 1


def test_a_cut_after_text_raises_after_yielding_it_and_is_not_retried(gemini, standin):
    items = []
    with pytest.raises(ModelFailed):
        collect(gemini, "s", [("user", "abcdef [[standin chunks=4 cut_after=2]]")], items)
    assert [i.text for i in items] == ["Ech", "o: "]
    assert len(standin.model_requests()) == 1


def test_unreachable_gemini_is_unavailable(sleeps):
    from tests.support import free_port
    from workshop_chat.cloud.gemini import make_client

    client = make_client(2, api_key="k", base_url=f"http://127.0.0.1:{free_port()}")

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with pytest.raises(ModelUnavailable):
        collect(
            gemini_of(client, "m", retries=Retries(2, 0.5, 20), sleep=sleep), "s", [("user", "x")]
        )
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ("block=prompt", ("", "content-filter", True)),
        ("block=reply chunks=3", ("Echo: a", "content-filter", True)),
        ("finish=MAX_TOKENS", ("Echo: abc", "length", False)),
        ("finish=OTHER", ("Echo: abc", "other", False)),
    ],
)
def test_blocks_and_limits_map_to_ai_sdk_finish_reasons(gemini, knobs, expected):
    text, done = run(gemini, f"abc [[standin {knobs}]]")
    assert expected[0].startswith(text)
    assert (done.finish_reason, done.blocked) == expected[1:]


@pytest.mark.parametrize(
    ("gemini_reason", "ai_sdk"),
    [
        (None, "stop"),
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content-filter"),
        ("RECITATION", "content-filter"),
        ("PROHIBITED_CONTENT", "content-filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("LANGUAGE", "other"),
    ],
)
def test_finish_reason_mapping(gemini_reason, ai_sdk):
    assert finish_reason(gemini_reason) == ai_sdk


def test_temperature_and_max_output_tokens_reach_gemini(genai_client, standin):
    gemini = gemini_of(
        genai_client, "m", generation=Generation(temperature=0.3, max_output_tokens=77)
    )
    collect(gemini, "s", [("user", "x")])
    config = standin.model_requests()[0]["body"]["generationConfig"]
    assert config == {"temperature": 0.3, "maxOutputTokens": 77}
