"""Memory under attack: one account's flood of the largest bodies, each refused only once read,
at one instance of ours as deployed (deploy.sh's WORKERS and THREADS, Firebase auth, the
default rate limit), while another user's reply streams. The flood is stack/flood.py, which
tests/test_memory.py asserts; here its peak is reported beside the instance's 1 GiB.

The predecessor is not flooded: it reads any body whole and would send each file to the model,
so the figure would say nothing about a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack import flood, free_port

from ..context import Run, log

DEPLOYED_THREADS = "250"  # deploy.sh's --concurrency, which it passes as THREADS


@dataclass(frozen=True)
class Plan:
    requests: int
    rounds: int  # floods, one after another, on the same instance


FULL = Plan(requests=60, rounds=3)
QUICK = Plan(requests=60, rounds=1)


def run(ctx: Run) -> None:
    plan: Plan = ctx.plans["memory"]
    service = ctx.start_function(
        int(DEPLOYED_THREADS),
        "memory",
        AUTH_MODE="firebase",
        # Tokens are unsigned; the address is never called (see stack/tokens.py).
        FIREBASE_AUTH_EMULATOR_HOST=f"127.0.0.1:{free_port()}",
        ANONYMOUS_USERS="allow",
        RATE_LIMIT_PER_MINUTE="30",
    )
    rounds = []
    for n in range(plan.rounds):
        outcome = flood.flood(service, ctx.workers, plan.requests)
        rounds.append(
            {
                "idleRss": outcome.idle_rss,
                "peakRss": outcome.peak_rss,
                "statuses": {str(k): v for k, v in sorted(outcome.statuses.items())},
                "seconds": outcome.seconds,
                "victimWhole": outcome.victim_whole(),
            }
        )
        log(
            f"flood {n + 1}: peak RSS {outcome.peak_rss / flood.MIB:.0f} MiB (idle "
            f"{outcome.idle_rss / flood.MIB:.0f}), answers {dict(outcome.statuses)}, "
            f"victim whole: {outcome.victim_whole()}"
        )
    ctx.results["memory"] = {"requests": plan.requests, "workers": ctx.workers, "rounds": rounds}
