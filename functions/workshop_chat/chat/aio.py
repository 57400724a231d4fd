"""One asyncio loop per process, in one thread, that reads every model stream.

A stream then costs a task, not a thread: the request thread only waits for events, the
generation goes on in the loop after the client leaves, and stopping it is `task.cancel()`,
which closes the model's response at once, even while the model is silent. The loop starts
lazily, in the process that uses it: functions-framework builds the app in gunicorn's master
and forks, and a thread does not survive a fork.
"""

from __future__ import annotations

import asyncio
import contextvars
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
    """Run a coroutine as a task in the loop, in a copy of the caller's context (so what the
    request thread has current, its trace's span, is current in the task); the returned
    future cancels the task."""
    running = loop()
    context = contextvars.copy_context()
    future: Future[Any] = Future()

    def start() -> None:
        if future.cancelled():
            coroutine.close()
            return
        task = running.create_task(coroutine, context=context)
        task.add_done_callback(lambda done: _settle(future, done))
        future.add_done_callback(
            lambda f: running.call_soon_threadsafe(task.cancel) if f.cancelled() else None
        )

    running.call_soon_threadsafe(start)
    return future


def _settle(future: Future[Any], task: asyncio.Task[Any]) -> None:
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


def run(coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
    """Run a coroutine in the loop and wait for its result (tests and start-up helpers)."""
    return spawn(coroutine).result(timeout)
