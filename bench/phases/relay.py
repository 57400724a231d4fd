"""Relay delay per chunk: stand-in emits -> client receives, through a timestamping tap.

The same tap sits in front of the stand-in for ours and for the predecessor (each one's Gemini
base URL is the tap), so both ends of every delay are read from one clock in one event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from stack import Service

from .. import standin_control
from ..client import FUNCTION_TEXT, chat_body, request_bytes, stream
from ..context import STEP, Run, log, port_of
from ..stats import ms, percentile
from ..tap import Tap


@dataclass(frozen=True)
class Plan:
    streams: int
    chunks: int
    delay_ms: int


FULL = Plan(streams=20, chunks=20, delay_ms=50)
QUICK = Plan(streams=5, chunks=20, delay_ms=50)
WARM_STREAMS = 2


def run(ctx: Run) -> None:
    log("relay delay per chunk: ours, then the predecessor")
    asyncio.run(_relay(ctx, ctx.plans["relay"]))


async def _relay(ctx: Run, plan: Plan) -> None:
    host, port = ctx.standin_url.removeprefix("http://").rsplit(":", 1)
    tap = Tap(host, int(port))
    await tap.start()
    tap_url = f"http://127.0.0.1:{tap.port}"
    standin_control.configure(ctx.standin_url, chunks=plan.chunks, delay_ms=plan.delay_ms, words=60)
    results: dict[str, Any] = {"chunks": plan.chunks, "delayMs": plan.delay_ms}
    fn = ctx.start_ours_or_none(64, "relay", GOOGLE_GEMINI_BASE_URL=tap_url)
    if fn is not None:
        try:
            results |= await _streams(fn, tap, "ours", plan.streams)
        except RuntimeError as exc:  # the predecessor is still measured
            log(f"relay, ours: {exc}")
            ctx.fail("relay (ours)", str(exc))
        ctx.stop(fn)
    pred = ctx.start_predecessor("relay-predecessor", tap_url)
    results["predecessor"] = await _streams(pred, tap, "predecessor", plan.streams)
    ctx.stop(pred)
    await tap.close()
    ctx.results["relay"] = results


async def _streams(service: Service, tap: Tap, label: str, count: int) -> dict[str, Any]:
    """`count` streams one after another (after a warm-up), each chunk paired with its emit."""
    port = port_of(service)
    run_id = uuid.uuid4().hex[:6]
    delays: list[float] = []
    gaps: list[float] = []
    per_stream = []
    for i in range(count + WARM_STREAMS):
        tap.emits.clear()
        body = chat_body(f"relay-{run_id}-{i}", STEP, f"r{i}", "relay me")
        raw = request_bytes("127.0.0.1", port, "/", body, {})
        s = await stream("127.0.0.1", port, raw, FUNCTION_TEXT, 30)
        if not (s.ok and s.done):
            raise RuntimeError(
                f"{label}: relay stream failed: status={s.status} error={s.error} {s.detail}"
            )
        if i < WARM_STREAMS:
            continue
        emits = list(tap.emits)
        if len(emits) != len(s.texts):
            raise RuntimeError(f"{label}: {len(emits)} chunks emitted but {len(s.texts)} received")
        delays += [t - e for t, e in zip(s.texts, emits, strict=True)]
        gaps += [b - a for a, b in zip(s.texts, s.texts[1:], strict=False)]
        per_stream.append({"chunks": s.text_count, "reads": s.text_reads})
    log(
        f"relay, {label}: p50 {ms(percentile(delays, 50), 2)} ms "
        f"p99 {ms(percentile(delays, 99), 2)} ms"
    )
    return {"delays": delays, "gaps": gaps, "streams": per_stream}
