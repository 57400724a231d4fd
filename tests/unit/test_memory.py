"""Step outcomes: when a refresh runs, and what context a step gets from the ones before it."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from workshop_chat.domain import Message
from workshop_chat.memory import Debounce, Outcome, Workshop, earlier, with_outcomes


def test_one_refresh_in_flight_per_step_and_one_more_for_everything_that_landed_meanwhile():
    debounce = Debounce()
    key = ("s1", "define")
    assert debounce.request(key) is True  # starts
    assert debounce.request(key) is False  # a reply landed during the refresh
    assert debounce.request(key) is False  # and another: still only one more
    assert debounce.request(("s1", "ideate")) is True  # other steps are independent
    assert debounce.finished(key) is True  # run once more
    assert debounce.finished(key) is False  # idle now
    assert debounce.request(key) is True


def test_many_threads_asking_at_once_start_exactly_one_refresh():
    debounce = Debounce()
    started = []
    barrier = threading.Barrier(20)

    def ask() -> None:
        barrier.wait()
        started.append(debounce.request("k"))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert started.count(True) == 1
    assert debounce.finished("k") is True and debounce.finished("k") is False


OUTCOMES = {
    "test": Outcome("test", "tested", 5.0),
    "empathize": Outcome("empathize", "nurses", 1.0),
    "kickoff": Outcome("kickoff", "goals", 0.5),
    "define": Outcome("define", "problem", 2.0),
    "retro": Outcome("retro", "lessons", 9.0),
}


def test_a_step_gets_the_earlier_steps_in_workshop_order_then_others_by_start():
    assert [o.step_id for o in earlier("ideate", OUTCOMES, 3.0)] == ["empathize", "define"]
    assert [o.step_id for o in earlier("empathize", OUTCOMES, 1.0)] == []
    assert [o.step_id for o in earlier("retro", OUTCOMES, 9.0)] == [
        "empathize",
        "define",
        "test",
        "kickoff",
    ]
    # A step that has not started yet goes after every other one.
    assert [o.step_id for o in earlier("wrapup", OUTCOMES, None)][-2:] == ["kickoff", "retro"]


def test_outcomes_fit_the_budget_nearest_step_first():
    found = earlier("test", OUTCOMES, 5.0)
    whole = with_outcomes("PROMPT", found, 10_000)
    assert whole.startswith("PROMPT") and "## Empathize\nnurses" in whole
    assert whole.index("## Empathize") < whole.index("## Define")
    tight = with_outcomes("PROMPT", found, len(whole) - len("PROMPT") - 5)
    assert "## Define" in tight and "## Empathize" not in tight  # the oldest went first
    assert with_outcomes("PROMPT", found, 0) == "PROMPT"


def test_the_system_instruction_uses_the_conversation_outcomes():
    workshop = Workshop(lambda step: f"prompt {step}")
    first = Message("u1", "user", "hi", "complete", 3.0, 3.0)
    conversation = SimpleNamespace(messages=[first], outcomes=OUTCOMES)
    system = workshop.system("ideate", conversation, 1000)
    assert system.startswith("prompt ideate") and "## Define\nproblem" in system
    assert "## Test" not in system and "## Ideate" not in system
