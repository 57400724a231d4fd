"""The production setup, side by side with the predecessor: the benchmark's headline.

Ours runs as deploy.sh runs it: two instances (two functions-framework processes), each with
deploy.sh's WORKERS, default configuration otherwise (step summaries on), both from
bench/counting_main.py so that Firestore traffic is counted per turn on every worker. Several
conversations are built by real turns, interleaved round-robin; each turn of ours goes to an
instance picked at random (a seeded random.Random, so runs repeat), and gunicorn spreads it over
that instance's workers. Right after each turn of ours the same request goes straight to the
stand-in; the predecessor takes the same turn with the whole conversation in its body, followed
by its own direct request. Which side goes first alternates from turn to turn.

Two rounds: the stand-in answering at once, then waiting 300 ms before its first event (a
model's time to first token). After the last turn of a round the benchmark waits out the
function's summary debounce, so that the summaries that round caused are counted with it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Any

from stack import Service

from .. import counts, standin_control
from ..context import Run, log, port_of
from ..stats import ms
from . import recording
from .conversation import Conversation, Sides, user_text
from .production_figures import firestore_per_turn, round_figures


@dataclass(frozen=True)
class Plan:
    conversations: int  # per round, each a new session with one step
    turns: int  # per conversation and round
    warm_conversations: int  # throwaway, before the first round
    warm_turns: int
    first_delays_ms: tuple[int, ...] = (0, 300)  # one round each: the model's time to first token
    instances: int = 2
    threads: int = 64
    user_chars: int = 200
    reply_words: int = 150  # the stand-in's filler: replies of ~850 characters
    chunks: int = 3
    gap_s: float = 0.02  # between requests, so one's trailing writes do not slow the next
    seed: int = 19


FULL = Plan(conversations=4, turns=60, warm_conversations=4, warm_turns=4)
QUICK = Plan(conversations=4, turns=8, warm_conversations=3, warm_turns=3)
SUMMARY_DELAY_DEFAULT_S = 10.0  # the function's SUMMARY_DELAY_SECONDS default
SUMMARY_MARGIN_S = 5.0
COUNTS_SETTLE_S = 1.3  # counting_main's workers write their counts once a second


def run(ctx: Run) -> None:
    log("production: two instances of ours, conversations built by turns, vs the predecessor")
    asyncio.run(Production(ctx, ctx.plans["production"]).run())


class Production:
    """One production comparison: our two instances and the predecessor, warmed, then a
    round per time to first token. Its results go to `ctx.results["production"]` as each
    round ends, so a failing round keeps the ones before it."""

    def __init__(self, ctx: Run, plan: Plan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.instances: list[Service] = []
        self.count_dirs = [ctx.run_dir / f"counts-production{i}" for i in range(plan.instances)]
        self.alive = False  # ours: off after its first failure, the predecessor still measured
        self.ours_first = True
        self.sides: Sides  # once the services are up: it needs their ports
        self.run_id = uuid.uuid4().hex[:6]
        delay = ctx.extra_env.get("SUMMARY_DELAY_SECONDS")
        self.summary_delay_set = delay is not None
        self.summary_wait = float(delay or SUMMARY_DELAY_DEFAULT_S) + SUMMARY_MARGIN_S

    async def run(self) -> None:
        plan, ctx = self.plan, self.ctx
        theirs = ctx.start_predecessor("production-predecessor")
        self.start_ours()
        assert ctx.standin is not None
        self.sides = Sides(ctx.system, port_of(ctx.standin), port_of(theirs))
        results: dict[str, Any] = {
            "instances": plan.instances,
            "workers": ctx.workers,
            "threads": plan.threads,
            "summaryWaitSeconds": self.summary_wait,
            "summaryDelaySet": self.summary_delay_set,
            "rounds": [],
        }
        ctx.results["production"] = results
        await self.warm_up()
        for delay in plan.first_delays_ms:
            results["rounds"].append(await self.round(delay))

    def start_ours(self) -> None:
        for i, folder in enumerate(self.count_dirs):
            try:
                service = self.ctx.start_counting(self.plan.threads, f"production{i}", folder)
            except RuntimeError as exc:
                log(f"production: instance {i} of ours did not start; the predecessor only")
                self.ctx.fail(f"production instance {i}", str(exc))
                return
            self.instances.append(service)
        self.alive = True

    def configure(self, first_delay_ms: int) -> None:
        """Reset the stand-in's recording; the reset clears its knobs, so set them again."""
        url = self.ctx.standin_url
        standin_control.reset(url)
        standin_control.configure(
            url,
            chunks=self.plan.chunks,
            words=self.plan.reply_words,
            first_delay_ms=first_delay_ms,
        )

    async def warm_up(self) -> None:
        """Throwaway conversations until every worker of ours has served a few turns: a
        worker's first turns build its clients and channels, and V8 compiles the route."""
        plan = self.plan
        self.configure(0)
        for batch in range(3):
            conversations = self.conversations(f"warm{batch}", plan.warm_conversations)
            for t in range(plan.warm_turns):
                for conversation in conversations:
                    await self.turn(f"warm{batch}", conversation, t)
            await asyncio.sleep(COUNTS_SETTLE_S)
            served = counts.worker_requests(*self.count_dirs)
            workers = len(self.instances) * self.ctx.workers
            # Without counts (ours from functions/main.py) the split cannot be known: one batch.
            if (
                not self.alive
                or not served
                or (len(served) >= workers and min(served.values()) >= 2)
            ):
                break
        log(f"production: warmed; requests per worker {served}")
        await self.wait_for_summaries()

    async def wait_for_summaries(self, label: str = "warm-up") -> None:
        """Let the function's summary debounce pass, so that the summaries the turns caused
        land in the recording and the counts before they are read (none without ours)."""
        if not self.instances:
            return
        log(f"production, {label}: waiting {self.summary_wait:.0f} s for the summaries")
        await asyncio.sleep(self.summary_wait)

    def conversations(self, label: str, count: int) -> list[Conversation]:
        return [
            Conversation(c, f"{label}-{self.run_id}-c{c}", f"{label}-{self.run_id}-p{c}")
            for c in range(count)
        ]

    async def round(self, first_delay_ms: int) -> dict[str, Any]:
        plan, label = self.plan, f"ttft{first_delay_ms}"
        log(f"production, {label}: {plan.conversations} conversations x {plan.turns} turns")
        self.configure(first_delay_ms)
        before = counts.totals(*self.count_dirs)
        conversations = self.conversations(label, plan.conversations)
        turns = []
        for t in range(plan.turns):
            for conversation in conversations:
                turns.append(await self.turn(label, conversation, t))
        await asyncio.sleep(COUNTS_SETTLE_S)
        per_turn = counts.by_turn(*self.count_dirs)
        after_turns = counts.totals(*self.count_dirs)
        await self.wait_for_summaries(label)
        after_summaries = counts.totals(*self.count_dirs)
        traced = recording.trace(standin_control.recorded(self.ctx.standin_url), turns)
        firestore_per_turn(turns, per_turn)
        result = {
            "firstDelayMs": first_delay_ms,
            "conversations": plan.conversations,
            "turnsPerConversation": plan.turns,
            "counted": bool(per_turn),
            "summaryDelaySeconds": self.summary_wait - SUMMARY_MARGIN_S,
            "turns": turns,
            "firestoreTurns": counts.difference(after_turns, before),
            "firestoreSummaryWait": counts.difference(after_summaries, after_turns),
            **traced,
        }
        result["figures"] = figures = round_figures(result)
        log(
            f"production, {label}: overhead p50/p90 ours {ms(figures['ours']['overheadP50'])}/"
            f"{ms(figures['ours']['overheadP90'])} ms, predecessor "
            f"{ms(figures['predecessor']['overheadP50'])}/"
            f"{ms(figures['predecessor']['overheadP90'])} ms; model calls per turn "
            f"{figures['ours']['callsPerTurn']} / {figures['predecessor']['callsPerTurn']}"
        )
        return result

    async def turn(self, label: str, conversation: Conversation, t: int) -> dict[str, Any]:
        """One turn on each side, each followed by its direct request; sides alternate first."""
        turn_id = f"{label}-c{conversation.index}-t{t}"
        text = user_text(turn_id, self.plan.user_chars)
        instance = self.rng.randrange(self.plan.instances)  # drawn even when ours is off
        row: dict[str, Any] = {
            "id": turn_id,
            "conversation": conversation.index,
            "turn": t,
            "stored": 2 * t,
            "instance": instance,
        }
        sides = [self.ours, self.theirs] if self.ours_first else [self.theirs, self.ours]
        self.ours_first = not self.ours_first
        for side in sides:
            await side(row, conversation, turn_id, text)
            await asyncio.sleep(self.plan.gap_s)
        return row

    async def ours(self, row: dict[str, Any], conv: Conversation, turn_id: str, text: str) -> None:
        if not self.alive:
            return
        port = port_of(self.instances[row["instance"]])
        s = await self.sides.ours(port, conv, turn_id, text)
        if not (s.ok and s.done and s.ttfc is not None):
            failure = f"turn {turn_id} failed: status={s.status} error={s.error} {s.detail}"
            log(f"production, ours: {failure}; measuring the predecessor only")
            self.ctx.fail("production (ours)", failure)
            self.alive = False
            return
        await asyncio.sleep(self.plan.gap_s)
        direct = await self.sides.direct(conv.ours, text, "ours")
        conv.ours.append((text, s.reply))
        conv.ours_ids += [i for i in (f"{turn_id}-u", s.message_id) if i]
        row["ours"] = {"sent": s.sent, "ttfc": s.ttfc, "replyChars": len(s.reply)}
        row["oursDirect"] = direct.ttfc

    async def theirs(
        self, row: dict[str, Any], conv: Conversation, turn_id: str, text: str
    ) -> None:
        s = await self.sides.theirs(conv, turn_id, text)
        if not (s.ok and s.done and s.ttfc is not None):
            raise RuntimeError(
                f"predecessor turn {turn_id} failed: status={s.status} error={s.error} {s.detail}"
            )
        await asyncio.sleep(self.plan.gap_s)
        direct = await self.sides.direct(conv.theirs, text, "predecessor")
        conv.theirs.append((text, s.reply))
        row["predecessor"] = {"sent": s.sent, "ttfc": s.ttfc, "replyChars": len(s.reply)}
        row["predecessorDirect"] = direct.ttfc
