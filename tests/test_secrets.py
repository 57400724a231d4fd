"""No secrets leak: upstream faults reach clients and logs only as our own words.

The function runs as production runs it (functions-framework under gunicorn, JSON log lines on
stdout, stderr merged in) with a known fake API key; the Gemini stand-in is made to fail in
every way it can, and every response body and every log line is searched for the key, the
upstream error texts, the user's message text and tracebacks.
"""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests import support
from tests.support import chat_body, collect, sse_chunks, text_of
from workshop_chat.chat.domain import BLOCKED_TEXT, BUSY_TEXT, CUT_TEXT, STALL_TEXT
from workshop_chat.chat.errors import ModelFailed, ModelUnavailable
from workshop_chat.cloud.gemini import Gemini, Retries, make_client
from workshop_chat.web.logs import JsonFormatter

SECRET = "AIza-test-SECRET-1234"
PRIVATE = "PRIVATE-USER-TEXT-7f3a"
# Everything the stand-in says when it fails (see standin/gemini_standin.py), and what an SDK
# exception or a traceback would carry.
UPSTREAM = (
    "Resource has been exhausted",
    "check quota",
    "internal error",
    "An internal error has occurred",
    "Injected failure",
    "unknown standin knob",
    "contents.parts must not be empty",
    "RESOURCE_EXHAUSTED",
    "INVALID_ARGUMENT",
    "INTERNAL",
    "RetryInfo",
    "developers.generativeai.google",
    "Traceback",
    "ClientError",
    "ServerError",
    "x-goog-api-key",
    "streamGenerateContent",
)
FORBIDDEN = (SECRET, "SECRET", PRIVATE, *UPSTREAM)


def leaks(text: str) -> list[str]:
    return [word for word in FORBIDDEN if word.lower() in text.lower()]


@pytest.fixture(scope="module")
def function(emulator, standin_service):
    service = support.start_function(
        {
            "GOOGLE_CLOUD_PROJECT": support.PROJECT,
            "GEMINI_API_KEY": SECRET,
            "GOOGLE_GEMINI_BASE_URL": standin_service.url,
            "FIRESTORE_EMULATOR_HOST": emulator,
            "AUTH_MODE": "none",
            "LOG_LEVEL": "DEBUG",
            "GEMINI_RETRY_ATTEMPTS": "2",
            "GEMINI_RETRY_INITIAL_DELAY_SECONDS": "0.01",
            "STALL_SECONDS": "1.5",  # generous: a loaded machine is slow to the first chunk
            "KEEPALIVE_SECONDS": "0.2",
            "RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    yield service
    service.stop()


def send(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def new_lines(function, start: int, wait: float = 5.0) -> list[str]:
    """The output since `start`, once the turn has logged its end (it does so after the reply)."""
    settle = "turn finished"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        lines = function.output[start:]
        if any(settle in line for line in lines):
            break
        time.sleep(0.05)
    time.sleep(0.1)
    return function.output[start:]


FAULTS = {
    "429 until retries run out": (f"{PRIVATE} [[standin status=429]]", 503, BUSY_TEXT),
    "429 with a retry delay": (f"{PRIVATE} [[standin status=429 retry_after=0]]", 503, BUSY_TEXT),
    "500": (f"{PRIVATE} [[standin status=500]]", 503, BUSY_TEXT),
    "503": (f"{PRIVATE} [[standin status=503]]", 503, BUSY_TEXT),
    "400 refused": (f"{PRIVATE} [[standin status=400]]", 502, CUT_TEXT),
    "400 with an upstream complaint": (f"{PRIVATE} [[standin nosuchknob=1]]", 502, CUT_TEXT),
    "403": (f"{PRIVATE} [[standin status=403]]", 502, CUT_TEXT),
    "cut before the first byte": (f"{PRIVATE} [[standin cut_after=0]]", 503, BUSY_TEXT),
    "cut mid-stream": (f"{PRIVATE} [[standin chunks=6 cut_after=2]]", 200, CUT_TEXT),
    "prompt blocked": (f"{PRIVATE} [[standin block=prompt]]", 200, BLOCKED_TEXT),
    "reply blocked": (f"{PRIVATE} [[standin block=reply]]", 200, None),
    "stalled": (f"{PRIVATE} [[standin chunks=4 stall_ms=5000]]", 200, STALL_TEXT),
}


@pytest.mark.parametrize(("text", "status", "said"), FAULTS.values(), ids=FAULTS.keys())
def test_upstream_faults_leak_nothing(function, db, standin, text, status, said):
    start = len(function.output)
    code, body = send(function.url, chat_body(text))
    lines = new_lines(function, start, 4.0 if said == STALL_TEXT else 6.0)
    assert code == status
    assert leaks(body.decode()) == []
    if status >= 400:
        assert json.loads(body)["error"]["message"] == said
    else:
        chunks = sse_chunks(body)
        shown = text_of(chunks) + " ".join(
            c.get("errorText", "") for c in chunks if isinstance(c, dict)
        )
        if said:
            assert said in shown
    if said != STALL_TEXT:  # a stall is settled by the watchdog, which logs nothing
        assert lines, "the turn logged nothing"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON entry: no stray stderr, no traceback
        assert entry["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR")
        assert leaks(line) == [], line
    # The stand-in did get the key (masked in its recording): it was there to leak.
    assert standin.model_requests()[0]["headers"]["x-goog-api-key"] == "***"


def test_the_stored_reply_carries_only_our_words(function, db, standin):
    send(function.url, chat_body(f"{PRIVATE} [[standin chunks=6 cut_after=2]]"))
    time.sleep(0.3)
    reply = db.document("sessions/s1/steps/empathize/messages/m1~reply").get().to_dict()
    assert reply["status"] == "error"
    assert leaks(json.dumps(reply, default=str).replace(PRIVATE, "")) == []


def test_no_log_line_ever_carried_a_secret(function):
    """Everything the process wrote since it started, start-up lines included."""
    assert function.output
    for line in function.output:
        json.loads(line)
        assert leaks(line) == [], line


# --- The Gemini adapter on its own: invalid contents --------------------------------------


@pytest.fixture
def records():
    """Every record of our loggers, formatted as production formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("workshop_chat")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.parametrize(
    ("contents", "raised"),
    [
        ([("user", "")], ModelFailed),  # "contents.parts must not be empty"
        ([("user", "hi [[standin status=429]]")], ModelUnavailable),
        ([("user", "hi [[standin status=500]]")], ModelUnavailable),
    ],
)
def test_the_adapter_raises_our_own_errors_without_upstream_text(
    standin, records, contents, raised
):
    client = make_client(2, api_key=SECRET, base_url=standin.url)
    model = Gemini(
        client, "gemini-2.5-flash", retries=Retries(2, 0.0, 20.0), summary_model="gemini-lite"
    )
    with pytest.raises(raised) as caught:
        collect(model, "system", contents)
    error = caught.value
    assert error.__cause__ is None and error.__suppress_context__
    assert leaks(str(error)) == [] and leaks(repr(error)) == []
    logged = records.getvalue()
    assert logged
    assert leaks(logged) == [], logged
    if contents[0][1] == "":
        # The stand-in did complain in those words: the adapter kept them to itself.
        assert standin.model_requests()[0]["body"]["contents"][0]["parts"] == []
