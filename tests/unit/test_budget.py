"""The daily token budgets: which UTC day a charge lands on, when a refused turn may come back,
what a call costs, and which limit speaks first."""

from __future__ import annotations

import calendar

import pytest

from tests.unit.support import Listener, turn
from workshop_chat.chat.budget import Spend, seconds_to_next_day, tokens_of, utc_day
from workshop_chat.chat.domain import Turn, UserMessage
from workshop_chat.chat.errors import RateLimited, Unavailable
from workshop_chat.chat.ports import ModelDone

MIDNIGHT = calendar.timegm((2026, 12, 7, 0, 0, 0))


def test_a_day_is_a_utc_day_and_its_last_second_belongs_to_it():
    assert utc_day(MIDNIGHT - 0.001) == "2026-12-06"
    assert utc_day(MIDNIGHT) == "2026-12-07"
    assert seconds_to_next_day(MIDNIGHT - 0.5) == 1
    assert seconds_to_next_day(MIDNIGHT) == 86_400
    assert seconds_to_next_day(MIDNIGHT - 3600) == 3600


def test_a_call_costs_its_total_or_the_sum_of_its_parts():
    assert tokens_of({"inputTokens": 10, "outputTokens": 5, "totalTokens": 21}) == 21
    assert tokens_of({"inputTokens": 10, "outputTokens": 5, "reasoningTokens": 6}) == 21
    assert tokens_of(None) == tokens_of({}) == 0


@pytest.mark.parametrize(
    ("spend", "refused"),
    [
        (Spend("d", 99, 0, 100, 0), None),
        (Spend("d", 100, 0, 100, 0), ("quota_exceeded", RateLimited)),
        (Spend("d", 0, 1000, 100, 1000), ("budget_exhausted", Unavailable)),
        (Spend("d", 500, 1000, 100, 1000), ("budget_exhausted", Unavailable)),  # project first
        (Spend("d", 10**9, 10**9, 0, 0), None),  # no limits
    ],
)
def test_the_project_budget_speaks_before_the_users_and_both_say_when(spend, refused):
    refusal = spend.refusal(MIDNIGHT - 60)
    if refused is None:
        assert refusal is None
        return
    assert refusal is not None and (refusal.code, type(refusal)) == refused
    assert refusal.retry_after == 60


def test_a_user_past_the_day_is_refused_before_the_model_and_the_next_day_is_new(
    make_chat, store, model
):
    store.limits = (30, 0)
    store.now = MIDNIGHT - 120
    chat = make_chat()

    def reply(the_turn, uid="alice"):
        listener = Listener(chat, the_turn, uid)
        model.wait_call()
        model.send("ok", ModelDone("stop", {"totalTokens": 20}))
        return listener.join()

    reply(turn("one", "m1"))
    assert store.read("alice", store.now).user == 20
    reply(turn("two", "m2"))  # 20 < 30: it may go, and it overruns
    with pytest.raises(RateLimited) as refused:
        Listener(chat, turn("three", "m3")).join()
    assert (refused.value.code, refused.value.retry_after) == ("quota_exceeded", 120)
    assert len(model.calls) == 2 and store.doc("s1", "define", "m3") is None
    reply(Turn("s2", "define", UserMessage("b1", "hi")), "bob")  # someone else still may
    store.now = MIDNIGHT + 1
    reply(turn("morning", "m4"))
    assert store.read("alice", store.now).user == 20 and len(model.calls) == 4


def test_the_project_budget_stops_every_user(make_chat, store, model):
    store.limits = (0, 15)
    chat = make_chat()
    listener = Listener(chat, turn("one", "m1"))
    model.wait_call()
    model.send("ok", ModelDone("stop", {"totalTokens": 20}))
    listener.join()
    with pytest.raises(Unavailable) as refused:
        Listener(chat, Turn("s2", "define", UserMessage("b1", "hi")), "bob").join()
    assert refused.value.code == "budget_exhausted" and len(model.calls) == 1
