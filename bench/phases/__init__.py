"""The benchmark's phases, in the order a run takes them; each is `run(ctx)` plus its plans.

Cold start goes first, on a machine nothing of ours has loaded yet; the production comparison
(the headline) next; then the relay, the memory flood and the cost of tracing; the load phase,
which leaves the emulator busiest, last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import Run
from . import cold, load, memory, production, relay, telemetry

# name -> (run, plan for a full run, plan for --quick)
PHASES: dict[str, tuple[Callable[[Run], None], Any, Any]] = {
    "cold": (cold.run, cold.FULL, cold.QUICK),
    "production": (production.run, production.FULL, production.QUICK),
    "relay": (relay.run, relay.FULL, relay.QUICK),
    "memory": (memory.run, memory.FULL, memory.QUICK),
    "telemetry": (telemetry.run, telemetry.FULL, telemetry.QUICK),
    "load": (load.run, load.FULL, load.QUICK),
}
