"""Daily token budgets on the emulator, written as the attacks they stop: accounts are free,
so one script can sign up a fresh uid per turn; only a budget per project bounds the bill.
The ledger's documents are read back to check what a turn and its summary were charged."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.support import bearer, chat_body, sse_chunks, text_of, unsigned_token, wait_for
from workshop_chat.chat.budget import seconds_to_next_day, utc_day


@pytest.fixture
def budgeted(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> Callable:
    """An app that takes any uid (emulator tokens), with the given budgets."""
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")

    def make(**env: str) -> Any:
        return make_app(
            AUTH_MODE="firebase", FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099", **env
        ).test_client()

    return make


def turn(client: Any, uid: str, mid: str, session: str | None = None) -> Any:
    body = chat_body(f"note from {uid}", mid, session=session or f"s-{uid}")
    response = client.post("/", json=body, headers=bearer(unsigned_token(uid)))
    assert response.data  # read to its end: the reply's final write is behind it
    return response


def spent(db: Any, uid: str) -> int:
    snap = db.document(f"budgets/{utc_day(time.time())}/budgetUsers/{uid}").get()
    return int((snap.to_dict() or {}).get("tokens", 0)) if snap.exists else 0


def shards(db: Any) -> dict[str, int]:
    day = utc_day(time.time())
    return {
        s.id: s.to_dict()["tokens"] for s in db.collection(f"budgets/{day}/budgetShards").stream()
    }


def test_fresh_accounts_in_a_loop_run_into_the_project_budget(budgeted, db, standin):
    client = budgeted(DAILY_TOKENS="60", USER_DAILY_TOKENS="1000000", SUMMARY_DELAY_SECONDS="60")
    answered = 0
    for i in range(30):
        response = turn(client, f"fresh{i}", f"m{i}")
        if response.status_code != 200:
            break
        assert text_of(sse_chunks(response.data)) == f"Echo: note from fresh{i}"
        answered += 1
    else:
        pytest.fail("thirty fresh accounts all got a reply")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "budget_exhausted"
    assert int(response.headers["Retry-After"]) == pytest.approx(
        seconds_to_next_day(time.time()), abs=5
    )
    assert len(standin.model_requests()) == answered  # the refused turn asked nothing
    assert not db.document(f"sessions/s-fresh{answered}").get().exists  # and wrote nothing
    # What every reply cost is on its user and, in all, on the project's shards.
    users = sum(spent(db, f"fresh{i}") for i in range(answered))
    assert users >= 60 and sum(shards(db).values()) == users


def test_one_account_past_its_quota_gets_429_until_midnight_and_others_go_on(budgeted, db, standin):
    client = budgeted(USER_DAILY_TOKENS="40", DAILY_TOKENS="0", SUMMARY_DELAY_SECONDS="60")
    codes = [turn(client, "mallory", f"m{i}", "s1").status_code for i in range(12)]
    refused = codes.index(429)
    assert refused >= 1 and set(codes[refused:]) == {429} and set(codes[:refused]) == {200}
    response = turn(client, "mallory", "late", "s1")
    assert response.get_json()["error"]["code"] == "quota_exceeded"
    assert 0 < int(response.headers["Retry-After"]) <= 86_400
    assert len(standin.model_requests()) == refused
    assert turn(client, "alice", "a1").status_code == 200
    usage = client.get("/usage", headers=bearer(unsigned_token("mallory"))).get_json()
    assert usage["usedTokens"] == spent(db, "mallory") >= 40
    assert (usage["limitTokens"], usage["remainingTokens"]) == (40, 0)
    assert usage["day"] == utc_day(time.time())
    assert usage["projectBudgetExhausted"] is False


def test_a_summary_is_charged_to_the_session_owner_in_its_own_write(budgeted, db, standin):
    client = budgeted(USER_DAILY_TOKENS="1000000", DAILY_TOKENS="100000000")
    assert turn(client, "alice", "m1", "s1").status_code == 200
    reply = db.document("sessions/s1/steps/empathize/messages/m1~reply").get().to_dict()
    after_reply = reply["usage"]["totalTokens"]
    wait_for(lambda: spent(db, "alice") > after_reply)  # the summary's tokens came in
    summary = [r for r in standin.requests() if r["path"].endswith(":generateContent")]
    assert len(summary) == 1
    assert spent(db, "alice") == sum(shards(db).values())


def test_the_project_counter_spreads_over_shards(budgeted, db):
    client = budgeted(USER_DAILY_TOKENS="0", DAILY_TOKENS="100000000", SUMMARY_DELAY_SECONDS="60")
    for i in range(12):
        assert turn(client, f"u{i}", f"m{i}").status_code == 200
    counted = shards(db)
    assert len(counted) > 1 and all(0 <= int(n) < 64 for n in counted)
    assert sum(counted.values()) == sum(spent(db, f"u{i}") for i in range(12))


def test_usage_without_budgets_says_there_is_no_limit(make_app):
    client = make_app(USER_DAILY_TOKENS="0", DAILY_TOKENS="0").test_client()
    body = client.get("/usage").get_json()
    assert body["limitTokens"] is None and body["remainingTokens"] is None


def test_one_users_finals_in_one_batch_are_stored_and_charged_once_each(db):
    """A BatchWrite takes one write a document: many replies of one user ending together (a
    load, a team) must not fail their finals by charging the same ledger document twice."""
    from workshop_chat.chat.domain import Content, Ending, UserMessage
    from workshop_chat.chat.ports import ReplyWrite, WriteOutcome
    from workshop_chat.firestore.access import FirestoreAccess
    from workshop_chat.firestore.conversations import FirestoreStore
    from workshop_chat.firestore.ledger import Ledger
    from workshop_chat.firestore.replies import ReplyWriter

    access = FirestoreAccess(db, ledger=Ledger(db, 10**9, 10**9))
    store, writer = FirestoreStore(access), ReplyWriter(access)
    claims = []
    for i in range(5):
        seen = store.open(f"s{i}", "define", "alice", budget=True)
        claims.append(
            store.begin(seen, UserMessage(f"u{i}", "Hi"), f"u{i}~reply", "new", time.time(), None)
        )
    usage = {"totalTokens": 7}
    writes = [ReplyWrite(c, Content("Echo"), Ending("complete", "stop", usage)) for c in claims]
    assert writer.write_replies(writes) == [WriteOutcome.WROTE] * 5
    assert spent(db, "alice") == 35 and sum(shards(db).values()) == 35
    assert writer.write_replies(writes) == [WriteOutcome.WROTE] * 5  # a retry charges nothing
    assert spent(db, "alice") == 35


def test_a_turn_reads_its_users_spend_once_per_refresh_and_its_own_charges_at_once(db):
    """A process reads a user's spend beside the head at most once per `refresh_seconds`:
    another instance's charges show within that, this process's own at once."""
    from workshop_chat.firestore.access import FirestoreAccess
    from workshop_chat.firestore.conversations import FirestoreStore
    from workshop_chat.firestore.ledger import Ledger

    here = FirestoreAccess(db, ledger=Ledger(db, 100, 0, refresh_seconds=1.0))
    there = FirestoreAccess(db, ledger=Ledger(db, 100, 0, refresh_seconds=1.0))
    store = FirestoreStore(here)
    assert store.open("s1", "define", "bob", budget=True).spend.refusal(time.time()) is None
    reads = here.reads
    assert store.open("s1", "define", "bob", budget=True).spend.user == 0
    assert here.reads - reads == 1  # the head alone: bob's spend was read just now
    batch = db.batch()
    there.ledger.charge(batch, {"bob": 150}, time.time())  # over on another instance
    batch.commit()
    assert store.open("s1", "define", "bob", budget=True).spend.user == 0  # not seen yet
    wait_for(lambda: store.open("s1", "define", "bob", budget=True).spend.user == 150, 3)
    assert store.open("s1", "define", "bob", budget=True).spend.refusal(time.time()) is not None
    batch = db.batch()
    here.ledger.charge(batch, {"bob": 5}, time.time())
    batch.commit()
    assert store.open("s1", "define", "bob", budget=True).spend.user == 155  # no read


def test_refused_requests_that_use_up_a_minute_hold_the_users_turns_on_every_instance(
    budgeted, db, standin
):
    """Bad bodies are counted where they are refused; the one that uses the minute up marks the
    stored minute, so a second instance refuses the same user's turns before the model."""
    here = budgeted(RATE_LIMIT_PER_MINUTE="3")
    elsewhere = budgeted(RATE_LIMIT_PER_MINUTE="3")
    bad = chat_body("x", "bad id!")
    for _ in range(3):
        refused = here.post("/", json=bad, headers=bearer(unsigned_token("mallory")))
        assert refused.status_code == 400
    response = elsewhere.post(
        "/", json=chat_body("hi", "m1"), headers=bearer(unsigned_token("mallory"))
    )
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "rate_limited"
    assert standin.model_requests() == []
    # Another user is not held.
    assert turn(elsewhere, "alice", "a1").status_code == 200
