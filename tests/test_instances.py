"""The production setup: two instances of two gunicorn workers each, a step's turns landing on
any of them. Each turn makes exactly one model call, with the whole conversation in context;
each process reads the history whole at most once; a burst of replies makes one summary call
whose input is bounded."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
import requests

from tests import support
from tests.support import chat_body, function_env, sse_chunks, text_of


@pytest.fixture(scope="module")
def instances(emulator, standin_service) -> Iterator[list[support.Service]]:
    env = function_env(
        emulator,
        standin_service,
        WORKERS="2",
        THREADS="16",
        LOG_LEVEL="INFO",
        SUMMARY_DELAY_SECONDS="1.5",
        HISTORY_MAX_CHARS="4000",
    )
    with support.instances(env) as started:
        yield started


def post(service: support.Service, body: dict) -> list:
    response = requests.post(service.url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    return sse_chunks(response.content)


def logged(service: support.Service, message: str) -> list[dict]:
    found = []
    for line in list(service.output):
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == message:
                found.append(entry)
    return found


def chat_calls(standin) -> list[dict]:
    return standin.model_requests()


def summary_calls(standin) -> list[dict]:
    return [r for r in standin.requests() if r["path"].endswith(":generateContent")]


def prompt_chars(request: dict) -> int:
    body = request["body"]
    return sum(len(p.get("text", "")) for c in body["contents"] for p in c["parts"])


def test_turns_at_random_over_two_instances_make_one_call_each_with_the_whole_context(
    instances, db, standin
):
    chooser = random.Random(19)
    session = f"prod-{time.monotonic_ns()}"
    before = {id(s): len(logged(s, "history read")) for s in instances}
    for i in range(20):
        instance = chooser.choice(instances)
        text = f"turn {i}"
        chunks = post(instance, chat_body(text, f"m{i}", session=session, step="ideate"))
        assert text_of(chunks) == f"Echo: {text}"
        calls = chat_calls(standin)
        assert len(calls) == i + 1, f"turn {i} made {len(calls) - i} model calls"
        # The model saw every earlier turn, whichever process stored it.
        contents = calls[-1]["body"]["contents"]
        assert len(contents) == 2 * i + 1
        assert [c["parts"][0]["text"] for c in contents[::2]] == [f"turn {n}" for n in range(i + 1)]
    for instance in instances:
        reads = logged(instance, "history read")[before[id(instance)] :]
        whole = [r for r in reads if r["count"]]
        # Each of its two worker processes read the step whole at most once; after that, only
        # what changed since it last looked.
        assert len(whole) <= 2, whole


def test_a_burst_of_replies_makes_one_summary_call_with_bounded_input(instances, db, standin):
    chooser = random.Random(7)
    session = f"burst-{time.monotonic_ns()}"
    filler = " ".join(f"word{n}" for n in range(120))  # ~1 000 characters a message
    for i in range(8):
        post(chooser.choice(instances), chat_body(f"{i} {filler}", f"b{i}", session=session))
    wait = support.wait_for(lambda: summary_calls(standin), timeout=20)
    time.sleep(3)  # any second call of the same burst would show up here
    calls = summary_calls(standin)
    assert len(calls) == 1, wait
    assert prompt_chars(calls[0]) <= 4000  # HISTORY_MAX_CHARS, with ~16 000 in the step
    assert "7 word0" in json.dumps(calls[0]["body"])  # the newest turns are the ones kept

    # Two more replies: the next summary sends the previous one and only what is new.
    for i in range(8, 10):
        post(chooser.choice(instances), chat_body(f"late {i}", f"b{i}", session=session))
    support.wait_for(lambda: len(summary_calls(standin)) == 2, timeout=20)
    second = json.dumps(summary_calls(standin)[1]["body"])
    assert "late 8" in second and "late 9" in second
    assert '\\"text\\": \\"7 word0' not in second  # an old turn is not sent again
    assert "Previous summary" in second
