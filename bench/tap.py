"""A timestamping TCP relay between the function and the stand-in.

The stand-in's emit times are not on the wire, and its `asyncio.sleep` between events drifts, so
"scheduled" emit times would be off by a millisecond or more after a few chunks. Instead the
function's Gemini base URL points here: every SSE event the stand-in writes is stamped with
`time.monotonic()` the moment it is read, then passed on untouched. The client that reads the
function's response runs in the same process and event loop, so both ends of "stand-in emits,
client receives" are read from one clock. What the relay itself adds (one loopback hop) counts
against the function, so the figure errs on the high side.
"""

from __future__ import annotations

import asyncio
import time


class _Side(asyncio.Protocol):
    def __init__(self, tap: Tap, peer: _Side | None = None, upstream: bool = False) -> None:
        self.tap = tap
        self.peer = peer
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.upstream:
            now = time.monotonic()
            # Count event starts, including one split across two reads.
            joined = self.tail + data
            events = joined.count(b"data: ") - self.tail.count(b"data: ")
            self.tail = joined[-5:]
            if events:
                self.tap.emits.extend([now] * events)
        peer = self.peer
        if peer is None or peer.transport is None:
            self.buffer.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class Tap:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.emits: list[float] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def accept() -> asyncio.Protocol:
            down = _Side(self)
            task = loop.create_task(self._connect(down))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return down

        self.server = await loop.create_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connect(self, down: _Side) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(
                lambda: _Side(self, down, upstream=True), *self.target
            )
        except OSError:
            if down.transport is not None:
                down.transport.close()
            return
        down.peer = up
        assert up.transport is not None
        for data in down.buffer:
            up.transport.write(data)
        down.buffer.clear()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
