"""Daily token budgets: what one user, and the whole project, may spend on Gemini in a UTC day.

Accounts are free to make, so a per-minute limit alone bounds nothing: these bound the bill.
A turn is refused before any model call once its user, or the project, has spent the day's
budget; the tokens of a reply and of the step summary it causes are charged when they are
written (`Spend` is what was read with the turn, `tokens_of` what a call cost).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from .errors import ChatError, RateLimited, Unavailable

DAY_SECONDS = 86_400


def utc_day(now: float) -> str:
    """The ledger's key for the UTC day `now` falls in: `YYYY-MM-DD`."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_next_day(now: float) -> int:
    """Whole seconds until the next UTC midnight, at least 1 (a Retry-After)."""
    start = calendar.timegm(time.strptime(utc_day(now), "%Y-%m-%d"))
    return max(1, int(start + DAY_SECONDS - now + 0.999))


def tokens_of(usage: dict[str, int] | None) -> int:
    """What a call cost: prompt, output and thinking tokens (Gemini's total counts all three)."""
    if not usage:
        return 0
    total = usage.get("totalTokens")
    if total is not None:
        return max(0, total)
    parts = ("inputTokens", "outputTokens", "reasoningTokens")
    return max(0, sum(usage.get(k, 0) for k in parts))


@dataclass(frozen=True)
class Spend:
    """Tokens spent on `day` by one user and by the whole project, with the limits they are
    held to (0: no limit)."""

    day: str
    user: int = 0
    project: int = 0
    user_limit: int = 0
    project_limit: int = 0

    def refusal(self, now: float) -> ChatError | None:
        """Why a turn may not ask the model now, or None if it may."""
        wait = seconds_to_next_day(now)
        if self.project_limit and self.project >= self.project_limit:
            return Unavailable("budget_exhausted", "the daily budget is spent; try tomorrow", wait)
        if self.user_limit and self.user >= self.user_limit:
            return RateLimited("quota_exceeded", "your daily quota is used up", wait)
        return None
