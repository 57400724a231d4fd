"""One account must not take an instance down for everyone: a flood of the largest bodies,
each refused only once read, against the function as deployed (two gunicorn workers), while
another user's reply streams (the flood itself: stack/flood.py, which the benchmark runs too)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stack import flood
from tests import support

FLOOD = 60
LIMIT = 512 * flood.MIB


@pytest.fixture(scope="module")
def deployed(emulator: str, standin_service: support.Service) -> Iterator[support.Service]:
    env = support.function_env(
        emulator,
        standin_service,
        WORKERS="2",
        THREADS="80",
        AUTH_MODE="firebase",
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099",
        RATE_LIMIT_PER_MINUTE="30",
    )
    service = support.start_function(env)
    yield service
    service.stop()


def test_a_flood_of_big_bodies_from_one_account_leaves_memory_bounded_and_others_served(
    deployed: support.Service, db: Any
) -> None:
    outcome = flood.flood(deployed, workers=2, requests=FLOOD)

    assert outcome.statuses.total() == FLOOD
    assert set(outcome.statuses) <= {0, 400, 429, 503}, outcome.statuses
    assert outcome.statuses[400] >= 1  # some were read, and refused for what they held
    assert outcome.peak_rss < LIMIT, f"peak {outcome.peak_rss / flood.MIB:.0f} MiB"
    # The other user's reply came whole, and the attacker left nothing behind.
    assert outcome.victim_whole(), outcome.victim_body[-300:]
    assert not list(db.collection("sessions").document("s1").collections())
    print(f"flood peak RSS {outcome.peak_rss / flood.MIB:.0f} MiB")
