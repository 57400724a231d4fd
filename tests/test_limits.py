"""Limits: what one request, one reply and one user per minute may cost, all configurable."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections import Counter
from typing import Any

import pytest

from tests import support
from tests.support import chat_body, sse_chunks, text_of
from workshop_chat.config import Config, ConfigError

MESSAGES = "sessions/s1/steps/empathize/messages"
MINIMAL = {"GOOGLE_CLOUD_PROJECT": support.PROJECT, "GEMINI_API_KEY": "k"}


def stored(db, path: str = MESSAGES) -> dict[str, dict]:
    return {d.id: d.to_dict() for d in db.collection(path).stream()}


def error_of(response) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    return response.get_json()["error"]


# --- Configuration: sane defaults, one clear line per bad value ----------------------------


def test_defaults_are_sane():
    config = Config.from_env(MINIMAL)
    assert config.max_request_bytes == 256 * 1024
    assert config.max_message_chars == 16_000
    assert config.max_parts == 32
    assert config.history_max_chars == 200_000
    assert config.max_output_tokens == 8192
    assert config.max_reply_bytes == 900_000 < 1024 * 1024  # under Firestore's document limit
    assert config.rate_limit_per_minute == 30
    # A maximal message still fits one Firestore document, even in 4-byte characters.
    assert config.max_message_chars * 4 < 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("MAX_REQUEST_BYTES", "lots", "MAX_REQUEST_BYTES must be a whole number, not 'lots'"),
        (
            "MAX_REQUEST_BYTES",
            "100",
            "MAX_REQUEST_BYTES must be between 1024 and 33554432, not 100",
        ),
        ("MAX_REQUEST_BYTES", "1e9", "MAX_REQUEST_BYTES must be a whole number, not '1e9'"),
        ("MAX_MESSAGE_CHARS", "0", "MAX_MESSAGE_CHARS must be between 1 and 200000, not 0"),
        (
            "MAX_MESSAGE_CHARS",
            "1000000",
            "MAX_MESSAGE_CHARS must be between 1 and 200000, not 1000000",
        ),
        ("MAX_PARTS", "-1", "MAX_PARTS must be between 1 and 1000, not -1"),
        ("HISTORY_MAX_CHARS", "10", "HISTORY_MAX_CHARS must be between 1000 and 4000000, not 10"),
        (
            "MAX_REPLY_BYTES",
            "2000000",
            "MAX_REPLY_BYTES must be between 1000 and 1000000, not 2000000",
        ),
        (
            "RATE_LIMIT_PER_MINUTE",
            "-5",
            "RATE_LIMIT_PER_MINUTE must be between 0 and 100000, not -5",
        ),
        ("RATE_LIMIT_PER_MINUTE", "ten", "RATE_LIMIT_PER_MINUTE must be a whole number, not 'ten'"),
        (
            "GEMINI_MAX_OUTPUT_TOKENS",
            "0",
            "GEMINI_MAX_OUTPUT_TOKENS must be between 1 and 65536, not 0",
        ),
        (
            "GEMINI_MAX_OUTPUT_TOKENS",
            "100000",
            "GEMINI_MAX_OUTPUT_TOKENS must be between 1 and 65536, not 100000",
        ),
    ],
)
def test_an_invalid_limit_is_one_clear_problem(name, value, problem):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**MINIMAL, name: value})
    assert caught.value.problems == [problem]


def test_every_invalid_limit_is_reported_at_once():
    bad = {
        "MAX_REQUEST_BYTES": "1",
        "MAX_MESSAGE_CHARS": "x",
        "MAX_PARTS": "0",
        "HISTORY_MAX_CHARS": "-1",
        "MAX_REPLY_BYTES": "5",
        "RATE_LIMIT_PER_MINUTE": "1.5",
        "GEMINI_MAX_OUTPUT_TOKENS": "",  # empty means the default
    }
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**MINIMAL, **bad})
    problems = caught.value.problems
    assert len(problems) == 6
    assert [p.split(" ")[0] for p in problems] == [k for k, v in bad.items() if v]
    assert str(caught.value).count("\n- ") == 6


# --- Request size, message length, parts ----------------------------------------------------


def test_a_body_over_max_request_bytes_is_413_and_stores_nothing(make_app, db, standin):
    client = make_app(MAX_REQUEST_BYTES="2048").test_client()
    big = json.dumps(chat_body("x" * 2100))
    response = client.post("/", data=big, content_type="application/json")
    assert response.status_code == 413
    assert error_of(response) == {
        "code": "body_too_large",
        "message": "the body may be at most 2048 bytes",
    }
    assert list(db.collections()) == []
    assert standin.requests() == []
    fits = json.dumps(chat_body("x" * 1800))
    assert len(fits) <= 2048
    assert client.post("/", data=fits, content_type="application/json").status_code == 200


@pytest.mark.parametrize(
    ("text", "status"),
    [("x" * 10, 200), ("é" * 10, 200), ("😀" * 10, 200), ("x" * 11, 400), ("😀" * 11, 400)],
)
def test_message_length_is_counted_in_characters(make_app, db, text, status):
    client = make_app(MAX_MESSAGE_CHARS="10").test_client()
    response = client.post("/", json=chat_body(text))
    assert response.status_code == status
    if status == 400:
        assert error_of(response)["code"] == "message_too_long"
        assert list(db.collections()) == []
    else:
        assert text_of(sse_chunks(response.data)) == f"Echo: {text}"


@pytest.mark.parametrize(("count", "status"), [(3, 200), (4, 400), (40, 400)])
def test_the_number_of_parts_is_limited(make_app, db, standin, count, status):
    client = make_app(MAX_PARTS="3").test_client()
    body = chat_body()
    body["messages"][-1]["parts"] = [{"type": "text", "text": f"p{i} "} for i in range(count)]
    response = client.post("/", json=body)
    assert response.status_code == status
    if status == 400:
        assert error_of(response)["code"] == "too_many_parts"
        assert standin.requests() == []
    else:
        assert response.data
        sent = standin.model_requests()[-1]["body"]["contents"]
        assert sent == [{"role": "user", "parts": [{"text": "p0 p1 p2 "}]}]


@pytest.mark.parametrize("budget", [1000, 2500])
def test_the_model_never_sees_more_history_than_the_budget(make_app, standin, budget):
    client = make_app(HISTORY_MAX_CHARS=str(budget)).test_client()
    for i in range(8):
        assert client.post("/", json=chat_body(f"{i}" * 400, f"m{i}")).data
        contents = standin.model_requests()[-1]["body"]["contents"]
        assert sum(len(c["parts"][0]["text"]) for c in contents) <= budget
        assert contents[0]["role"] == "user"
        assert contents[-1] == {"role": "user", "parts": [{"text": f"{i}" * 400}]}


@pytest.mark.parametrize(
    ("env", "expected"), [({}, 8192), ({"GEMINI_MAX_OUTPUT_TOKENS": "123"}, 123)]
)
def test_max_output_tokens_reach_the_model(make_app, standin, env, expected):
    assert make_app(**env).test_client().post("/", json=chat_body()).data
    config = standin.model_requests()[-1]["body"]["generationConfig"]
    assert config["maxOutputTokens"] == expected


# --- A reply stays under Firestore's document limit -----------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "chunks"),
    [
        ("Hello", 1000, 1),  # one chunk far over the limit
        ("Hello", 1000, 3),
        ("Hello", 1000, 200),  # many small chunks
        ("日本語のテキスト", 1001, 7),  # 3-byte characters: never split inside one
        ("😀😀😀", 4001, 5),
    ],
)
def test_a_reply_is_cut_at_max_reply_bytes(make_app, db, standin, text, limit, chunks):
    standin.configure(words=2000, chunks=chunks)  # ~14 KB of reply
    client = make_app(MAX_REPLY_BYTES=str(limit)).test_client()
    response = client.post("/", json=chat_body(text))
    assert response.status_code == 200
    chunks_out = sse_chunks(response.data)
    assert chunks_out[-2] == {
        "type": "finish",
        "finishReason": "length",
        "messageMetadata": chunks_out[-2]["messageMetadata"],
    }
    reply = stored(db)["m1~reply"]
    saved = reply["parts"][0]["text"]
    assert reply["status"] == "complete"
    assert reply["finishReason"] == "length"
    assert limit - 4 < len(saved.encode()) <= limit
    assert saved.startswith(f"Echo: {text} w1 w2")
    assert text_of(chunks_out) == saved
    history = client.get(f"/{MESSAGES}").get_json()["messages"]
    assert history[-1]["metadata"]["finishReason"] == "length"


def test_a_reply_under_the_limit_is_whole(make_app, db, standin):
    standin.configure(words=100)
    response = make_app(MAX_REPLY_BYTES="100000").test_client().post("/", json=chat_body("Hi"))
    assert text_of(sse_chunks(response.data)).endswith(" w99 w100")
    assert stored(db)["m1~reply"]["finishReason"] == "stop"


# --- Rate limit: per user, shared by every instance -------------------------------------------


def post(client, message_id: str, **headers: str):
    return client.post("/", json=chat_body("Hi", message_id), headers=headers)


def test_the_rate_limit_holds_across_instances(make_app, db, standin):
    one = make_app(RATE_LIMIT_PER_MINUTE="3").test_client()
    two = make_app(RATE_LIMIT_PER_MINUTE="3").test_client()
    # Each turn read to its end: one still being written would make the next wait its turn.
    for client, message_id in ((one, "m1"), (two, "m2"), (one, "m3")):
        response = post(client, message_id)
        assert response.status_code == 200 and response.data
    for client, message_id in ((two, "m4"), (one, "m5")):
        response = post(client, message_id)
        assert response.status_code == 429
        assert error_of(response) == {
            "code": "rate_limited",
            "message": "too many messages; wait a moment",
        }
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert set(stored(db)) == {"m1", "m1~reply", "m2", "m2~reply", "m3", "m3~reply"}
    # Three turns, three model calls: `one` brought its copy from before m2 up to date (the
    # head names what changed) before asking the model for m3.
    assert len(standin.model_requests()) == 3
    limits = {d.id: d.to_dict() for d in db.collection("rateLimits").stream()}
    assert list(limits) == ["local-user"]
    assert limits["local-user"]["count"] == 3


def test_the_window_opens_again_after_a_minute(make_app, db):
    app = make_app(RATE_LIMIT_PER_MINUTE="1")
    client = app.test_client()
    now = [1_800_000_000.0]
    app.api.turns.generations.clock = lambda: now[0]
    assert post(client, "m1").status_code == 200
    now[0] += 30
    limited = post(client, "m2")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "30"
    now[0] += 30.5
    assert post(client, "m2").status_code == 200


def test_a_burst_gets_exactly_the_allowance_and_never_a_5xx(make_app, db, standin):
    """Parallel requests of one user contend on one document: none may fail for it. (Those
    let in take the step's turns in order: each is read to its end.)"""
    app = make_app(RATE_LIMIT_PER_MINUTE="5")
    statuses: list[int] = []

    def send(i: int) -> None:
        response = post(app.test_client(), f"m{i}")
        response.get_data()
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(statuses) == {200: 5, 429: 20}
    assert len(standin.model_requests()) == 5
    assert len([m for m in stored(db) if not m.endswith("~reply")]) == 5


def test_the_rate_limit_is_per_user(make_app, db, monkeypatch):
    from tests.support import bearer, unsigned_token

    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    client = make_app(
        AUTH_MODE="firebase",
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099",
        RATE_LIMIT_PER_MINUTE="1",
    ).test_client()
    alice, bob = bearer(unsigned_token("alice")), bearer(unsigned_token("bob"))
    assert client.post("/", json=chat_body("A", "a1", session="sa"), headers=alice).data
    assert (
        client.post("/", json=chat_body("A", "a2", session="sa"), headers=alice).status_code == 429
    )
    assert client.post("/", json=chat_body("B", "b1", session="sb"), headers=bob).status_code == 200
    assert sorted(d.id for d in db.collection("rateLimits").stream()) == ["alice", "bob"]


def test_zero_turns_the_rate_limit_off(make_app, db):
    client = make_app(RATE_LIMIT_PER_MINUTE="0").test_client()
    for i in range(5):
        assert post(client, f"m{i}").status_code == 200
    assert list(db.collection("rateLimits").stream()) == []


# --- The same limits under gunicorn, where a body may come without a length ---------------


@pytest.fixture(scope="module")
def function(emulator, standin_service):
    service = support.start_function(
        {
            "GOOGLE_CLOUD_PROJECT": support.PROJECT,
            "GEMINI_API_KEY": "k",
            "AUTH_MODE": "none",
            "FIRESTORE_EMULATOR_HOST": emulator,
            "GOOGLE_GEMINI_BASE_URL": standin_service.url,
            "MAX_REQUEST_BYTES": "4096",
            "RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    yield service
    service.stop()


def raw_post(url: str, chunks: list[bytes], length: int | None) -> tuple[int, bytes]:
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.putrequest("POST", "/")
    for key, value in headers.items():
        conn.putheader(key, value)
    if length is None:
        conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for chunk in chunks:
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if length is None else chunk)
        if length is None:
            conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer (and close) before the whole body is sent
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_size_limit_holds_under_gunicorn(function, db, chunked):
    body = json.dumps(chat_body("x" * 20_000)).encode()
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    status, answer = raw_post(function.url, pieces, None if chunked else len(body))
    assert status == 413
    assert json.loads(answer)["error"]["code"] == "body_too_large"
    small = json.dumps(chat_body("small")).encode()
    status, answer = raw_post(function.url, [small], None if chunked else len(small))
    assert status == 200
    assert text_of(sse_chunks(answer)) == "Echo: small"
    assert set(stored(db)) == {"m1", "m1~reply"}
    assert not [line for line in function.output if "Traceback" in line or "Error" in line]
