"""Log lines Cloud Logging understands, carrying no secrets, texts or tracebacks."""

from __future__ import annotations

import json
import logging

import pytest

from workshop_chat.web.logs import JsonFormatter, trace_from_headers


@pytest.mark.parametrize(
    ("headers", "trace"),
    [
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            {"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
            "projects/p/traces/105445aa7843bc8bf206b12000100000",
        ),
        ({"X-Cloud-Trace-Context": 'not-a-trace\n{"severity":"ERROR"}'}, None),
        ({}, None),
    ],
)
def test_trace_comes_from_either_header_and_only_when_well_formed(headers, trace):
    assert trace_from_headers(headers, "p") == trace


def test_a_line_has_severity_message_trace_and_fields_but_no_traceback():
    try:
        raise ValueError("upstream said: key AIza-secret")
    except ValueError:
        record = logging.LogRecord(
            "workshop_chat",
            logging.ERROR,
            __file__,
            1,
            "it broke",
            None,
            exc_info=__import__("sys").exc_info(),
        )
    record.trace = "projects/p/traces/abc"
    record.fields = {"sessionId": "s1", "severity": "spoofed"}
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert entry["message"] == "it broke"
    assert entry["logging.googleapis.com/trace"] == "projects/p/traces/abc"
    assert entry["sessionId"] == "s1"
    assert entry["errorType"] == "ValueError"
    assert "AIza" not in line and "Traceback" not in line
