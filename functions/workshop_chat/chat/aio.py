"""One asyncio loop per process, in one thread, that reads every model stream.

A stream then costs a task, not a thread: the request thread only waits for events, the
generation goes on in the loop after the client leaves, and stopping it is `task.cancel()`,
which closes the model's response at once, even while the model is silent. The loop starts
lazily, in the process that uses it: functions-framework builds the app in gunicorn's master
and forks, and a thread does not survive a fork.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            threading.Thread(target=_loop.run_forever, name="model-streams", daemon=True).start()
        return _loop


def spawn(coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
    """Run a coroutine as a task in the loop; the returned future cancels the task."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop())


def run(coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
    """Run a coroutine in the loop and wait for its result (tests and start-up helpers)."""
    return spawn(coroutine).result(timeout)
