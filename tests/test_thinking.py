"""Gemini's thinking, Google Search grounding and safety settings, end to end on the stand-in."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import support
from tests.support import chat_body, sse_chunks, text_of
from workshop_chat.config import Config, ConfigError

THOUGHT = "**Reading the request**\n\nThe team wants an echo, so I will echo it."
SOURCES = [
    {
        "type": "source-url",
        "sourceId": "m1~reply-source-1",
        "url": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-a",
        "title": "example.com",
    },
    {
        "type": "source-url",
        "sourceId": "m1~reply-source-2",
        "url": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-b",
        "title": "example.org",
    },
]
ALL = {"GEMINI_INCLUDE_THOUGHTS": "true", "GEMINI_GOOGLE_SEARCH": "true"}


def camel(value):
    """Gemini reads proto JSON, where snake_case and lowerCamel names are the same field."""
    if isinstance(value, dict):
        return {
            k.split("_")[0] + "".join(w.capitalize() for w in k.split("_")[1:]): camel(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def config_of(standin) -> dict:
    return camel(standin.model_requests()[-1]["body"].get("generationConfig", {}))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"GEMINI_THINKING_BUDGET": "0"}, {"thinkingBudget": 0}),
        ({"GEMINI_THINKING_BUDGET": "-1"}, {"thinkingBudget": -1}),
        (
            {"GEMINI_THINKING_BUDGET": "512", "GEMINI_INCLUDE_THOUGHTS": "true"},
            {"thinkingBudget": 512, "includeThoughts": True},
        ),
        ({"GEMINI_INCLUDE_THOUGHTS": "true"}, {"includeThoughts": True}),
    ],
)
def test_the_thinking_settings_reach_the_request(make_app, standin, env, expected):
    client = make_app(**env).test_client()
    assert client.post("/", json=chat_body("Hi", step="empathize")).data
    assert config_of(standin).get("thinkingConfig") == expected


def test_a_step_prompt_can_set_its_own_thinking_budget(make_app, standin):
    client = make_app(GEMINI_THINKING_BUDGET="-1").test_client()
    assert client.post("/", json=chat_body("Quick ideas", "i1", step="ideate")).data
    assert config_of(standin)["thinkingConfig"] == {"thinkingBudget": 0}
    assert client.post("/", json=chat_body("Frame it", "d1", step="define")).data
    assert config_of(standin)["thinkingConfig"] == {"thinkingBudget": 4096}
    assert client.post("/", json=chat_body("Test plan", "t1", step="test")).data
    assert config_of(standin)["thinkingConfig"] == {"thinkingBudget": -1}


def test_grounding_and_safety_reach_the_request(make_app, standin):
    client = make_app(GEMINI_GOOGLE_SEARCH="true", GEMINI_SAFETY_THRESHOLD="BLOCK_ONLY_HIGH")
    assert client.test_client().post("/", json=chat_body("Hi")).data
    body = camel(standin.model_requests()[-1]["body"])
    assert body["tools"] == [{"googleSearch": {}}]
    assert body["safetySettings"] == [
        {"category": c, "threshold": "BLOCK_ONLY_HIGH"}
        for c in (
            "HARM_CATEGORY_HARASSMENT",
            "HARM_CATEGORY_HATE_SPEECH",
            "HARM_CATEGORY_SEXUALLY_EXPLICIT",
            "HARM_CATEGORY_DANGEROUS_CONTENT",
        )
    ]


def test_without_the_settings_the_request_carries_none_of_them(client, standin):
    assert client.post("/", json=chat_body("Hi")).data
    body = standin.model_requests()[-1]["body"]
    assert [list(tool) for tool in body["tools"]] == [["functionDeclarations"]]  # the board's
    assert "safetySettings" not in body
    assert "thinkingConfig" not in body.get("generationConfig", {})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GEMINI_SAFETY_THRESHOLD", "BLOCK_SOME"),
        ("GEMINI_THINKING_BUDGET", "lots"),
        ("GEMINI_THINKING_BUDGET", "-2"),
        ("GEMINI_INCLUDE_THOUGHTS", "maybe"),
        ("APP_CHECK", "sometimes"),
    ],
)
def test_an_invalid_setting_stops_the_start_with_a_clear_message(name, value):
    env = {"GOOGLE_CLOUD_PROJECT": support.PROJECT, "GEMINI_API_KEY": "k", name: value}
    with pytest.raises(ConfigError) as error:
        Config.from_env(env)
    assert len(error.value.problems) == 1 and name in error.value.problems[0]


def test_thoughts_and_sources_stream_as_their_own_chunks(make_app, standin):
    client = make_app(**ALL).test_client()
    standin.configure(chunks=2)
    chunks = sse_chunks(client.post("/", json=chat_body("Hi")).data)
    kinds = [c["type"] if isinstance(c, dict) else c for c in chunks]
    assert kinds == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-delta",
        "source-url",
        "source-url",
        "text-end",
        "finish-step",
        "finish",
        "[DONE]",
    ]
    reasoning = [c for c in chunks if isinstance(c, dict) and c["type"] == "reasoning-delta"]
    assert "".join(c["delta"] for c in reasoning) == THOUGHT
    assert {c["id"] for c in reasoning} == {"m1~reply-reasoning"}
    assert text_of(chunks) == "Echo: Hi"  # no thought in the answer
    assert [c for c in chunks if isinstance(c, dict) and c["type"] == "source-url"] == SOURCES
    usage = chunks[-2]["messageMetadata"]["usage"]
    assert usage["reasoningTokens"] == len(THOUGHT) // 4


def test_thoughts_and_sources_are_stored_come_back_and_never_go_back_to_the_model(
    make_app, db, standin
):
    client = make_app(**ALL).test_client()
    first = sse_chunks(client.post("/", json=chat_body("Hi")).data)
    stored = db.document("sessions/s1/steps/empathize/messages/m1~reply").get().to_dict()
    assert stored["parts"] == [
        {"type": "reasoning", "text": THOUGHT},
        {"type": "text", "text": "Echo: Hi"},
        *SOURCES,
    ]
    history = client.get("/sessions/s1/steps/empathize/messages").get_json()["messages"]
    assert history[-1]["parts"] == stored["parts"]
    # A re-send replays the reply whole: thoughts, text and sources.
    again = sse_chunks(client.post("/", json=chat_body("Hi")).data)
    assert [c for c in again if isinstance(c, dict) and c["type"] == "source-url"] == SOURCES
    replayed = "".join(
        c["delta"] for c in again if isinstance(c, dict) and c["type"] == "reasoning-delta"
    )
    assert replayed == THOUGHT and text_of(again) == text_of(first)
    assert client.post("/", json=chat_body("Next", "m2")).data
    contents = standin.model_requests()[-1]["body"]["contents"]
    assert [c["parts"] for c in contents] == [
        [{"text": "Hi"}],
        [{"text": "Echo: Hi"}],
        [{"text": "Next"}],
    ]
    assert "Reading the request" not in json.dumps(standin.model_requests()[-1]["body"])


READER = support.ROOT / "tests" / "js" / "read-stream.mjs"


@pytest.mark.parametrize("package", ["ai", "ai-v5"])
def test_the_ai_sdk_builds_reasoning_source_and_text_parts(emulator, standin_service, package):
    from tests.support import function_env

    function = support.start_function(function_env(emulator, standin_service, **ALL))
    try:
        user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
        options = {"sessionId": f"sdk-{package}", "stepId": "empathize", "messages": [user]}
        done = subprocess.run(
            ["node", str(READER), package, function.url + "/", json.dumps(options)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=READER.parent,
        )
    finally:
        function.stop()
    assert done.returncode == 0, done.stderr
    states = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert states[-1] == {"done": True}
    parts = [p for p in states[-2]["parts"] if p["type"] != "step-start"]
    assert [p["type"] for p in parts] == ["reasoning", "text", "source-url", "source-url"]
    assert parts[0]["text"] == THOUGHT and parts[1]["text"] == "Echo: Hi"
    expected = [
        {**{k: s[k] for k in ("url", "title")}, "sourceId": s["sourceId"].replace("m1", "u1")}
        for s in SOURCES
    ]
    assert [{k: p[k] for k in ("sourceId", "url", "title")} for p in parts[2:]] == expected
