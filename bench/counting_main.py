"""An entry point for functions-framework that counts Firestore traffic, for the benchmark only.

It builds exactly what functions/main.py builds (`service.build`), but hands in a Firestore client
whose RPCs are counted, and answers `GET /_bench/stats` with the counts. Nothing in the deployed
code changes, and the counts are those of the wire, not what the store believes it did:

- reads: documents returned by BatchGetDocuments (found or missing: Firestore bills a missing
  document as a read) and RunQuery (at least one per query, as billed);
- writes: the writes in each Commit (a batch of 4 is 4 writes);
- rpcs: every call, including BeginTransaction and Rollback, which cost latency but no reads.

Only the latency-free counting phase of the benchmark runs this file; every timing is taken
against functions/main.py.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "functions"))

import functions_framework
from google.cloud import firestore

from workshop_chat.config import Config
from workshop_chat.logs import setup
from workshop_chat.service import build

COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()


def _add(**counts: int) -> None:
    with _LOCK:
        COUNTS.update(counts)


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
        return commit(*args, **kwargs)

    def begin_transaction(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1, transactions=1)
        return begin(*args, **kwargs)

    def rollback_(*args: Any, **kwargs: Any) -> Any:
        _add(rpcs=1)
        return rollback(*args, **kwargs)

    api.batch_get_documents = batch_get_documents
    api.run_query = run_query_
    api.commit = commit_
    api.begin_transaction = begin_transaction
    api.rollback = rollback_


_config = Config.from_env()
setup(_config.log_level)
_db = firestore.Client(project=_config.project)
_count(_db._firestore_api)
_api = build(_config, db=_db)


@functions_framework.http
def chat(request):  # noqa: ANN001, ANN201 - the framework's signature
    if request.path == "/_bench/stats":
        with _LOCK:
            body = dict(COUNTS)
        body["storeReads"] = _api.chat.store.reads
        return json.dumps(body), 200, {"Content-Type": "application/json"}
    return _api(request)
