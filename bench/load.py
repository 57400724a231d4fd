"""Load client, run as its own process: N concurrent chat streams against one function instance.

`python -m bench.load --port P --streams N --ramp S --expect K --timeout T` starts N streams
evenly over S seconds, each a new conversation, reads every one to its end and prints one JSON
line: per-stream times (time.monotonic(), comparable with the parent's samples), status and
how many text chunks arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
import uuid

from .client import FUNCTION_TEXT, Stream, chat_body, request_bytes, stream


def raise_fd_limit() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(port: int, streams: int, ramp: float, timeout: float, text: str) -> list[Stream]:
    run_id = uuid.uuid4().hex[:8]
    start = time.monotonic()

    async def one(index: int) -> Stream:
        await asyncio.sleep(max(0.0, start + ramp * index / max(1, streams) - time.monotonic()))
        body = chat_body(f"load-{run_id}-{index}", "ideate", f"m-{run_id}-{index}", text)
        raw = request_bytes("127.0.0.1", port, "/", body, {})
        return await stream("127.0.0.1", port, raw, FUNCTION_TEXT, timeout, keep_times=False)

    return list(await asyncio.gather(*(one(i) for i in range(streams))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--text", default="load test")
    args = parser.parse_args(argv)
    raise_fd_limit()
    results = asyncio.run(run(args.port, args.streams, args.ramp, args.timeout, args.text))
    out = [
        {
            "sent": s.sent,
            "firstText": s.first_text,
            "ended": s.ended,
            "status": s.status,
            "texts": s.text_count,
            "done": s.done,
            "errorEvent": s.error_event,
            "error": s.error,
            "detail": s.detail,
        }
        for s in results
    ]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
