"""Request bytes in flight: one user holds at most one largest body, a process at most its
budget, both give their bytes back, and refused requests run out a user's minute."""

from __future__ import annotations

import pytest

from workshop_chat.chat.errors import RateLimited, Unavailable
from workshop_chat.web.admission import Admission


def test_a_user_holds_one_largest_body_and_the_process_its_budget():
    gate = Admission(process_bytes=30, user_bytes=16, refusals_per_minute=0)
    with gate.admit("mallory", 16):
        with pytest.raises(RateLimited) as busy, gate.admit("mallory", 1):
            pass
        assert busy.value.code == "busy"
        with gate.admit("alice", 10):
            with pytest.raises(Unavailable) as full, gate.admit("bob", 5):
                pass
            assert full.value.code == "busy"
        with gate.admit("bob", 14):
            assert gate.peak == 30
    with gate.admit("mallory", 16), gate.admit("bob", 14):
        pass  # everything was given back, errors included


def test_refusals_run_out_the_users_minute_before_a_body_is_read():
    gate = Admission(process_bytes=100, user_bytes=100, refusals_per_minute=3)
    used_up = []
    for _ in range(3):
        with gate.admit("mallory", 1):
            pass
        used_up.append(gate.refused("mallory"))
    assert used_up == [False, False, True]  # the third uses the minute up: the store is told
    with pytest.raises(RateLimited) as limited, gate.admit("mallory", 1):
        pass
    assert limited.value.code == "rate_limited" and 1 <= limited.value.retry_after <= 60
    with gate.admit("alice", 1):
        pass
