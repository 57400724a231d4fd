"""An entry point for functions-framework that counts Firestore traffic, for the benchmark only.

It builds exactly what functions/main.py builds (`service.build`), but hands in a Firestore client
whose RPCs are counted, and answers `GET /_bench/stats` with the counts. Nothing in the deployed
code changes, and the counts are those of the wire, not what the store believes it did:

- reads: documents returned by BatchGetDocuments (found or missing: Firestore bills a missing
  document as a read) and RunQuery (at least one per query, as billed);
- writes: the writes in each Commit (a batch of 4 is 4 writes);
- rpcs: every call, including BeginTransaction and Rollback, which cost latency but no reads;
- commits / batch_writes: the write RPCs (Commit, BatchWrite), with how long each took (whole
  milliseconds, `commit_ms` / `batch_write_ms` histograms), so a load row can show whether the
  emulator's write rate bounds it.

`GET /_bench/stats` answers the counts of the worker that serves it, which is all of them with
one worker. With `BENCH_COUNTS_DIR` set, every worker also writes its counts to
`<dir>/<pid>.json` about once a second, so that a phase can sum several workers and instances.

Per turn: a request with an `X-Bench-Turn: <id>` header makes `<id>` the worker's current turn,
and every RPC the worker makes while its response is open is also counted under
`byTurn[<id>]`; from the moment the response is closed until the worker's next such request,
under `byTurn[<id>+after]` (what the turn left to the background, and whatever the worker then
starts on its own, such as a debounced summary). The production phase sends one turn at a
time, so each turn's counts, and the worker that served it, are exact.

The production and load phases run this file for our function (the counting costs a lock and
a dict update per RPC, microseconds against the RPC's milliseconds); the relay and cold-start
timings are taken against functions/main.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import functions_framework
from google.cloud import firestore

from workshop_chat.config import Config
from workshop_chat.service import build
from workshop_chat.web.logs import setup

COUNTS: Counter[str] = Counter()
LATENCY: dict[str, Counter[int]] = {"commit_ms": Counter(), "batch_write_ms": Counter()}
BY_TURN: dict[str, Counter[str]] = {}
_LOCK = threading.Lock()
_turn: str | None = None  # this worker's current benchmark turn (X-Bench-Turn)
AFTER = "+after"  # suffix of a turn's counts once its response is closed
_DUMP_DIR = os.environ.get("BENCH_COUNTS_DIR")
_dumping_in = 0  # the pid whose dump thread runs: the master imports this module, workers fork


def _add(**counts: int) -> None:
    global _dumping_in
    with _LOCK:
        COUNTS.update(counts)
        if _turn is not None:
            BY_TURN.setdefault(_turn, Counter()).update(counts)
        if _DUMP_DIR and _dumping_in != os.getpid():
            _dumping_in = os.getpid()
            threading.Thread(target=_dump_forever, name="bench-counts", daemon=True).start()


def _timed(kind: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    started = time.monotonic()
    try:
        return call(*args, **kwargs)
    finally:
        elapsed = int((time.monotonic() - started) * 1000 + 0.999)  # whole ms, rounded up
        with _LOCK:
            LATENCY[kind][elapsed] += 1


def snapshot() -> dict[str, Any]:
    with _LOCK:
        body: dict[str, Any] = dict(COUNTS)
        for kind, histogram in LATENCY.items():
            body[kind] = {str(k): v for k, v in histogram.items()}
        if BY_TURN:
            body["byTurn"] = {turn: dict(counts) for turn, counts in BY_TURN.items()}
    return body


def _dump_forever() -> None:
    assert _DUMP_DIR is not None
    path = os.path.join(_DUMP_DIR, f"{os.getpid()}.json")
    while True:
        body = json.dumps(snapshot())
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(path + ".tmp", path)
        time.sleep(1.0)


class _Counted:
    """Iterates a streaming response, counting what each item is; everything else delegates."""

    def __init__(self, inner: Any, kind: str) -> None:
        self._inner = inner
        self._kind = kind
        self._docs = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self._inner)
        except StopIteration:
            if self._kind == "query" and self._docs == 0:
                _add(reads=1)  # an empty query is billed one read
            raise
        pb = getattr(item, "_pb", item)
        fields = ("found", "missing") if self._kind == "get" else ("document",)
        if any(pb.HasField(f) for f in fields):
            self._docs += 1
            _add(reads=1)
        return item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _count(api: Any) -> None:
    batch_get, run_query, commit = api.batch_get_documents, api.run_query, api.commit
    begin, rollback = api.begin_transaction, api.rollback
    batch_write = api.batch_write

    def batch_get_documents(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1, batch_get=1)
        return _Counted(iter(batch_get(*args, **kwargs)), "get")

    def run_query_(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1, queries=1)
        return _Counted(iter(run_query(*args, **kwargs)), "query")

    def commit_(*args: Any, **kwargs: Any) -> Any:
        request = kwargs.get("request") or (args[0] if args else {})
        writes = request.get("writes") if isinstance(request, dict) else request.writes
        _add(rpcs=1, commits=1, writes=len(writes or []))
        return _timed("commit_ms", commit, *args, **kwargs)

    def batch_write_(*args: Any, **kwargs: Any) -> Any:
        request = kwargs.get("request") or (args[0] if args else {})
        writes = request.get("writes") if isinstance(request, dict) else request.writes
        _add(rpcs=1, batch_writes=1, writes=len(writes or []))
        return _timed("batch_write_ms", batch_write, *args, **kwargs)

    def begin_transaction(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1, transactions=1)
        return begin(*args, **kwargs)

    def rollback_(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1)
        return rollback(*args, **kwargs)

    api.batch_get_documents = batch_get_documents
    api.run_query = run_query_
    api.commit = commit_
    api.batch_write = batch_write_
    api.begin_transaction = begin_transaction
    api.rollback = rollback_


_config = Config.from_env()
setup(_config.log_level)
_db = firestore.Client(project=_config.project)
_count(_db._firestore_api)
_api = build(_config, db=_db)


@functions_framework.http
def chat(request):  # noqa: ANN001, ANN201 - the framework's signature
    global _turn
    if request.path == "/_bench/stats":
        body = snapshot()
        # What the store believes it read, where today's functions/ still keeps that count.
        with contextlib.suppress(AttributeError):
            body["storeReads"] = _api.chat.store.access.reads
        return json.dumps(body), 200, {"Content-Type": "application/json"}
    turn = request.headers.get("X-Bench-Turn")
    if turn:
        with _LOCK:
            _turn = turn
    _add(requests=1)  # per worker: how gunicorn split the connections
    response = _api(request)
    if turn and hasattr(response, "call_on_close"):
        response.call_on_close(lambda: _after(turn))
    return response


def _after(turn: str) -> None:
    """The turn's response is closed: what the worker does next is background (see above)."""
    global _turn
    with _LOCK:
        if _turn == turn:
            _turn = f"{turn}{AFTER}"
