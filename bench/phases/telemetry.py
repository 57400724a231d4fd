"""What tracing costs: two functions side by side, deploy.sh's WORKERS each, one without any
OTEL_* setting (the SDK is not loaded) and one tracing every request and exporting spans and
metrics over OTLP/HTTP to a local collector that takes them (a BatchSpanProcessor and a
PeriodicExportingMetricReader, as with Cloud Trace and Monitoring). Turns alternate between
them, each in a conversation of its own built by real turns, so the machine's drift falls on
both. The figures are the first-text time and the whole turn, as the client sees them.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import standin_control
from ..client import FUNCTION_TEXT, chat_body, request_bytes, stream
from ..context import STEP, Run, log, port_of
from ..stats import percentile


@dataclass(frozen=True)
class Plan:
    turns: int  # per side
    warm_turns: int


FULL = Plan(turns=150, warm_turns=10)
QUICK = Plan(turns=30, warm_turns=5)


def run(ctx: Run) -> None:
    log("telemetry: ours without OTEL_*, and ours tracing every request over OTLP")
    asyncio.run(_telemetry(ctx, ctx.plans["telemetry"]))


class Collector:
    """An OTLP/HTTP endpoint that takes whatever it is sent: the export's cost is ours, not a
    collector's."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{tail:.*}", self.take)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def take(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.requests += 1
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _telemetry(ctx: Run, plan: Plan) -> None:
    # The production phase's replies: about 850 characters in three chunks, at once.
    standin_control.configure(ctx.standin_url, chunks=3, words=150)
    collector = Collector()
    await collector.start()
    traced_env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    sides = {
        "off": ctx.start_function(64, "telemetry-off"),
        "on": ctx.start_function(64, "telemetry-on", **traced_env),
    }
    run_id = uuid.uuid4().hex[:6]
    times: dict[str, dict[str, list[float]]] = {s: {"first": [], "total": []} for s in sides}
    try:
        for i in range(plan.warm_turns + plan.turns):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                port = port_of(sides[side])
                body = chat_body(f"otel-{side}-{run_id}", STEP, f"t{i}", f"turn {i} of {side}")
                raw = request_bytes("127.0.0.1", port, "/", body, {})
                s = await stream("127.0.0.1", port, raw, FUNCTION_TEXT, 30)
                if not (s.ok and s.done and s.ttfc is not None and s.ended):
                    raise RuntimeError(f"{side}: turn {i} failed: {s.status} {s.error} {s.detail}")
                if i >= plan.warm_turns:
                    times[side]["first"].append(s.ttfc)
                    times[side]["total"].append(s.ended - s.sent)
                await asyncio.sleep(0.02)
        await asyncio.sleep(6)  # one more metric export
    finally:
        for service in sides.values():
            ctx.stop(service)
        await collector.close()
    results: dict[str, Any] = {"turns": plan.turns, "exports": collector.requests}
    results["exportBytes"] = collector.bytes
    for side, found in times.items():
        results[side] = {
            name: {"p50": _ms(percentile(values, 50)), "p90": _ms(percentile(values, 90))}
            for name, values in found.items()
        }
    for name in ("first", "total"):
        results[f"{name}OverheadP50Ms"] = round(
            results["on"][name]["p50"] - results["off"][name]["p50"], 1
        )
    ctx.results["telemetry"] = results


def _ms(seconds: float | None) -> float:
    return round((seconds or 0.0) * 1000, 1)
