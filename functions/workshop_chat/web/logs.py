"""Structured log lines that Cloud Logging reads as entries: severity, message, trace.

Only our own words and numbers are logged: no message text, no tokens, no upstream error bodies
and no stack traces (which can carry all three).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def trace_from_headers(headers: Any, project: str) -> str | None:
    """The trace resource name from `traceparent` or `X-Cloud-Trace-Context`, if well formed."""
    trace_id = None
    parent = headers.get("traceparent") or ""
    fields = parent.split("-")
    if len(fields) == 4 and _TRACE_ID.fullmatch(fields[1]):
        trace_id = fields[1]
    else:
        cloud = (headers.get("X-Cloud-Trace-Context") or "").split("/")[0].lower()
        if _TRACE_ID.fullmatch(cloud):
            trace_id = cloud
    if trace_id is None or not project:
        return None
    return f"projects/{project}/traces/{trace_id}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "message": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        trace = getattr(record, "trace", None)
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: a traceback or str(exc) may quote tokens or upstream bodies.
            entry["errorType"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup(level: str = "INFO") -> None:
    """Route our loggers to stdout as JSON lines; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("workshop_chat")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for noisy in ("google_genai", "google.genai", "httpx", "httpx2", "google.auth", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL + 1)
