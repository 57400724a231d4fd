"""A turn's trace, printed by OpenTelemetry's console exporter: the request's server span, the
claim, each model round after the GenAI conventions, the board's tool call and the final write,
all in the trace the caller's `traceparent` names; the summary in a trace of its own, linked to
the reply that caused it. No span carries what anyone wrote."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from stack import traces
from tests.support import chat_body, sse_chunks, text_of, wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SECRET = "Nurses hide pagers in lockers"
TRACE_PICTURE = Path(__file__).resolve().parent.parent / "docs" / "trace.png"


def printed(text: str) -> list[dict[str, Any]]:
    """Every JSON object on stdout, in order: log lines and (indented) spans alike."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        found.append(value)
        at = end
    return found


def spans_of(text: str) -> list[dict[str, Any]]:
    return [o for o in printed(text) if isinstance(o, dict) and "context" in o and "kind" in o]


def test_a_turn_is_one_trace_with_its_claim_model_tool_and_final_write(
    make_app, db, capfd, caplog, tmp_path
):
    caplog.set_level(logging.INFO, logger="workshop_chat")
    app = make_app(
        OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="chat-test", SUMMARY_DELAY_SECONDS="0"
    ).test_client()
    capfd.readouterr()
    body = chat_body(f"{SECRET} [[standin tool=add_board_items]]", "t1")
    response = app.post("/", json=body, headers={"traceparent": INCOMING})
    chunks = sse_chunks(response.get_data())
    response.close()
    reply = text_of(chunks)
    assert reply.startswith("Echo:")
    out = ""

    def summary_printed() -> bool:
        nonlocal out
        out += capfd.readouterr().out
        return any(s["name"].startswith("generate_content ") for s in spans_of(out))

    wait_for(summary_printed, timeout=20)
    spans = spans_of(out)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    (server,) = by_name["POST /"]
    assert server["kind"] == "SpanKind.SERVER"
    assert server["attributes"] == {
        "http.request.method": "POST",
        "http.route": "/",
        "http.response.status_code": 200,
    }
    assert server["context"]["trace_id"] == f"0x{TRACE_ID}"  # the caller's trace
    assert server["parent_id"] == "0x00f067aa0ba902b7"
    assert server["resource"]["attributes"]["service.name"] == "chat-test"
    server_id = server["context"]["span_id"]

    (claim,) = by_name["firestore claim"]
    assert claim["parent_id"] == server_id and claim["kind"] == "SpanKind.CLIENT"
    assert claim["attributes"]["db.system.name"] == "firestore"
    assert claim["attributes"]["workshop_chat.claim"] == "won"

    rounds = by_name["chat gemini-2.5-flash"]
    assert len(rounds) == 2  # the tool call's round, then the answer
    for model_span in rounds:
        attributes = model_span["attributes"]
        assert model_span["parent_id"] == server_id and model_span["kind"] == "SpanKind.CLIENT"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "gcp.gemini"
        assert attributes["gen_ai.request.model"] == "gemini-2.5-flash"
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["workshop_chat.step"] == "empathize"
    assert rounds[0]["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert [e["name"] for e in rounds[1]["events"]] == ["first_token"]

    (tool,) = by_name["execute_tool add_board_items"]
    assert tool["parent_id"] == server_id
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "add_board_items"

    (final,) = by_name["firestore final write"]
    assert final["parent_id"] == server_id
    assert final["attributes"]["workshop_chat.outcome"] == "wrote"

    in_turn = [claim, *rounds, tool, final]
    assert {s["context"]["trace_id"] for s in in_turn} == {f"0x{TRACE_ID}"}

    (summary,) = by_name["generate_content gemini-2.5-flash-lite"]
    assert summary["parent_id"] is None  # a trace of its own...
    assert summary["context"]["trace_id"] != f"0x{TRACE_ID}"
    assert [link["context"]["trace_id"] for link in summary["links"]] == [f"0x{TRACE_ID}"]

    # What was said is in no span: not the message, not the reply, not the board item.
    dumped = json.dumps(spans)
    assert SECRET not in dumped and reply not in dumped and "Echo" not in dumped
    # ./dev.sh --traces draws it: the request first, then its parts, in the order they began.
    drawn = traces.waterfall(traces.by_trace(traces.spans_in(out.splitlines()))[f"0x{TRACE_ID}"])
    # A turn of one asks the model first and claims beside the call.
    assert drawn.index(" POST /") < drawn.index("chat gemini") < drawn.index("firestore claim")
    assert "claim won (new)" in drawn and "first token" in drawn
    # The log lines name the same trace.
    logged = [r for r in caplog.records if r.getMessage() == "turn finished"]
    assert logged and all(r.trace.endswith(f"/traces/{TRACE_ID}") for r in logged)
    picture(traces.html([[server, *in_turn], [summary]]), tmp_path)


def picture(page: str, tmp_path: Path) -> None:
    """docs/trace.png, the picture in docs/operations.md: rewritten only when asked
    (UPDATE_SCREENSHOT=1) or missing, so a test run leaves git clean."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS

    target = TRACE_PICTURE
    if TRACE_PICTURE.exists() and not os.environ.get("UPDATE_SCREENSHOT"):
        target = tmp_path / TRACE_PICTURE.name
    source = tmp_path / "trace.html"
    source.write_text(page, encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        tab = browser.new_page(viewport={"width": 1100, "height": 300})
        tab.goto(source.as_uri())
        tab.screenshot(path=str(target), full_page=True)
        browser.close()
    assert target.stat().st_size > 5000


def test_cloud_runs_trace_header_names_the_trace_too(make_app, db, capfd):
    app = make_app(OTEL_TRACES_EXPORTER="console").test_client()
    capfd.readouterr()
    header = {"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=1"}
    response = app.get("/sessions/s1/steps/empathize/messages", headers=header)
    response.close()
    (server,) = [s for s in spans_of(capfd.readouterr().out) if s["kind"] == "SpanKind.SERVER"]
    assert server["name"] == "GET /sessions/<session_id>/steps/<step_id>/messages"
    assert server["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert server["attributes"]["http.response.status_code"] == 404


def test_without_an_exporter_nothing_is_printed(make_app, db, capfd):
    app = make_app().test_client()
    capfd.readouterr()
    response = app.post("/", json=chat_body("quiet", "q1"))
    assert text_of(sse_chunks(response.get_data())) == "Echo: quiet"
    response.close()
    assert not spans_of(capfd.readouterr().out)
