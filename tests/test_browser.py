"""End to end in a real Chromium: the demo page, useChat, the function, Firestore and sign-in.

The module starts its own stack on free ports: the Firebase Auth emulator (anonymous sign-in, so
every request carries a real, if unsigned, ID token), the function under gunicorn with
AUTH_MODE=firebase, and the demo page built with `vite build` and served by `vite preview`; the
Firestore emulator and the Gemini stand-in come from conftest. The stand-in is steered through
directives in the message text, exactly as a person trying the page would.

Needs Debian's Chromium (`ensure_apt chromium chromium`), the Python `playwright` package and the
demo's npm packages (`ensure_npm demo`); without them the tests fail, they never skip.
Set UPDATE_SCREENSHOT=1 to rewrite docs/screenshot.png (it is written anyway when missing).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import support

pytestmark = pytest.mark.timeout(420)

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = support.ROOT / "docs" / "screenshot.png"
TIMEOUT_MS = 20_000

# What the page shows: the chat's useChat status, its messages and the last assistant reply.
ASSISTANT = "[data-testid=message][data-role=assistant]"
ASSISTANT_TEXTS = f"{ASSISTANT} [data-testid=message-text]"
STATUS_MARKERS = f"{ASSISTANT} [data-testid=reply-status]"

# Samples the last assistant reply in the page every few ms until the chat is ready again, and
# returns every distinct length seen: proof that the reply was drawn piece by piece.
SAMPLE_REPLY_JS = """
async (selector) => {
  const lengths = [];
  let busy = false;
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const status = document.querySelector("[data-testid=chat]")?.dataset.status;
    busy = busy || status === "submitted" || status === "streaming";
    const replies = document.querySelectorAll(selector);
    const last = replies[replies.length - 1];
    if (last && lengths[lengths.length - 1] !== last.textContent.length) {
      lengths.push(last.textContent.length);
    }
    if (busy && status !== "submitted" && status !== "streaming") break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return lengths;
}
"""

# Installed before the page's own scripts on every load: the most assistant messages the page
# ever showed at once, counted after every change of the DOM.
COUNT_REPLIES_JS = """
window.__mostReplies = 0;
new MutationObserver(() => {
  const n = document.querySelectorAll('[data-testid=message][data-role=assistant]').length;
  window.__mostReplies = Math.max(window.__mostReplies, n);
}).observe(document, { childList: true, subtree: true });
"""


def _require_tools() -> None:
    """Fail, never skip, when the browser or the packages are missing: CI must install them."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` "
            "(test.sh: ensure_apt chromium chromium); never `playwright install`",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "the Python package playwright is missing: pip install -r requirements.txt",
            pytrace=False,
        )
    bins = support.DEMO / "node_modules" / ".bin"
    missing = [name for name in ("vite", "firebase") if not (bins / name).exists()]
    if missing or not shutil.which("node"):
        pytest.fail(
            f"demo/ npm packages are missing ({', '.join(missing) or 'node'}): "
            "`npm ci --prefix demo` (test.sh: ensure_npm demo)",
            pytrace=False,
        )


@dataclass
class Stack:
    demo_url: str
    function_url: str
    standin_url: str
    function: support.Service


@pytest.fixture(scope="module")
def stack(
    emulator: str,
    standin_service: support.Service,
    storage_emulator: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    _require_tools()
    tmp = tmp_path_factory.mktemp("browser")
    auth_port, function_port, demo_port = (support.free_port() for _ in range(3))
    function_url = f"http://127.0.0.1:{function_port}"
    services: list[support.Service] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            # The Auth emulator takes tens of seconds of CPU to start: build the page meanwhile.
            auth = pool.submit(support.start_auth_emulator, tmp / "auth", port=auth_port)
            build = pool.submit(
                support.build_demo,
                tmp / "dist",
                {
                    "VITE_CHAT_URL": function_url,
                    "VITE_FIREBASE_PROJECT": support.PROJECT,
                    "VITE_AUTH_EMULATOR_URL": f"http://127.0.0.1:{auth_port}",
                },
            )
            build.result()
            services.append(support.start_demo(tmp / "dist", port=demo_port))
            services.append(auth.result())
        function = support.start_function(
            {
                "GOOGLE_CLOUD_PROJECT": support.PROJECT,
                "FIRESTORE_EMULATOR_HOST": emulator,
                "STORAGE_EMULATOR_HOST": storage_emulator,
                "FILES_BUCKET": support.FILES_BUCKET,
                "GEMINI_API_KEY": "standin",
                "GOOGLE_GEMINI_BASE_URL": standin_service.url,
                "AUTH_MODE": "firebase",
                "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{auth_port}",
                "ALLOWED_ORIGINS": f"http://127.0.0.1:{demo_port}",
                "THREADS": "32",
                "RATE_LIMIT_PER_MINUTE": "0",
                "GEMINI_RETRY_ATTEMPTS": "2",
                "GEMINI_RETRY_INITIAL_DELAY_SECONDS": "0.05",
                "XDG_RUNTIME_DIR": str(tmp / "gunicorn"),
            },
            port=function_port,
        )
        services.append(function)
        yield Stack(f"http://127.0.0.1:{demo_port}", function_url, standin_service.url, function)
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture(scope="module")
def browser_context(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 860, "height": 760},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any, stack: Stack) -> Iterator[Any]:
    """A fresh tab; an uncaught exception in the page fails the test."""
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    # The function never crashed a request in the meantime.
    assert not [line for line in stack.function.output if "Traceback" in line], "\n".join(
        stack.function.output[-40:]
    )


# --- Helpers --------------------------------------------------------------------------------


def open_chat(page: Any, stack: Stack, session: str, step: str = "empathize") -> None:
    page.goto(f"{stack.demo_url}/?session={session}&step={step}")
    wait_loaded(page)


def wait_loaded(page: Any) -> None:
    page.get_by_test_id("chat").wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=auth-status]')"
        "?.textContent.startsWith('signed in')"
    )


def send(page: Any, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()


def wait_ready(page: Any, timeout: float = TIMEOUT_MS) -> str:
    """Wait until useChat has settled; returns its status (`ready` or `error`)."""
    page.wait_for_function(
        "() => ['ready', 'error'].includes("
        "document.querySelector('[data-testid=chat]')?.dataset.status)",
        timeout=timeout,
    )
    return page.get_by_test_id("chat").get_attribute("data-status")


def messages(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "[data-testid=message]",
        """items => items.map(item => ({
            id: item.dataset.messageId,
            role: item.dataset.role,
            text: item.querySelector('[data-testid=message-text]').textContent,
        }))""",
    )


def reload_and_capture_token(page: Any) -> str:
    """Reload the page; returns the bearer token its history GET carried (it must carry one)."""
    with page.expect_request(
        lambda request: request.method == "GET" and request.url.endswith("/messages")
    ) as captured:
        page.reload()
    wait_loaded(page)
    authorization = captured.value.all_headers().get("authorization", "")
    assert authorization.startswith("Bearer "), "the history GET carries no ID token"
    return authorization


def stored(stack: Stack, session: str, step: str, authorization: str) -> list[dict[str, Any]]:
    """The step's messages as the function's GET returns them."""
    request = urllib.request.Request(
        f"{stack.function_url}/sessions/{session}/steps/{step}/messages",
        headers={"Authorization": authorization},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["messages"]


def status_of(stack: Stack, path: str, authorization: str) -> tuple[int, Any]:
    """GET a function route with the page's ID token: its status and JSON body."""
    request = urllib.request.Request(
        f"{stack.function_url}{path}", headers={"Authorization": authorization}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def wait_outcomes_loaded(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector('[data-testid=outcomes]')?.dataset.state === 'ready'"
    )


def text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


def model_requests_with(stack: Stack, marker: str) -> int:
    """How many model calls the stand-in got whose last user text contains `marker`."""
    with urllib.request.urlopen(f"{stack.standin_url}/_standin/requests", timeout=10) as response:
        recorded = json.loads(response.read())["requests"]
    count = 0
    for item in recorded:
        body = item.get("body")
        if ":streamGenerateContent" not in item["path"] or not isinstance(body, dict):
            continue
        users = [c for c in body.get("contents", []) if c.get("role") == "user"]
        if users and marker in json.dumps(users[-1]):
            count += 1
    return count


def eventually(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def new_session() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


# --- Tests ----------------------------------------------------------------------------------


def test_reply_streams_in_and_history_survives_reload(page: Any, stack: Stack) -> None:
    session = new_session()
    open_chat(page, stack, session, "ideate")
    assert page.get_by_test_id("empty").is_visible()

    with page.expect_request(lambda r: r.method == "POST" and r.url.startswith(stack.function_url)):
        send(
            page,
            "How might we help new students find a study group? [[standin chunks=8 delay_ms=300]]",
        )
    lengths = page.evaluate(SAMPLE_REPLY_JS, ASSISTANT_TEXTS)
    assert wait_ready(page) == "ready"
    expected = "Echo: How might we help new students find a study group?"
    assert lengths[-1] == len(expected)
    partial = [n for n in lengths if 0 < n < len(expected)]
    assert len(set(partial)) >= 3, f"the reply did not grow in steps: lengths seen {lengths}"

    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == expected
    # useChat took over the server's id from the `start` chunk.
    assert shown[1]["id"] == f"{shown[0]['id']}~reply"
    assert page.get_by_test_id("message-meta").last.inner_text().endswith("gemini-2.5-flash")

    # The session and step are in the URL, so a reload shows the stored history.
    reload_and_capture_token(page)
    assert messages(page) == shown
    assert page.get_by_test_id("step-ideate").get_attribute("aria-pressed") == "true"

    # Another step has its own (empty) history; coming back loads this one again.
    page.get_by_test_id("step-define").click()
    page.get_by_test_id("empty").wait_for()
    assert "step=define" in page.url
    page.get_by_test_id("step-ideate").click()
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page) == shown


def test_regenerate_replaces_the_reply_in_place(page: Any, stack: Stack) -> None:
    session = new_session()
    marker = f"regen-{uuid.uuid4().hex[:6]}"
    open_chat(page, stack, session, "define")
    send(page, f"Define the problem {marker} [[standin chunks=4 delay_ms=150]]")
    assert wait_ready(page) == "ready"
    before = messages(page)
    assert [m["role"] for m in before] == ["user", "assistant"]

    page.get_by_test_id("regenerate").click()
    eventually(lambda: model_requests_with(stack, marker) == 2, what="the regenerate request")
    assert wait_ready(page) == "ready"
    page.wait_for_function(
        "([selector, text]) => [...document.querySelectorAll(selector)]"
        ".some(e => e.textContent === text)",
        arg=[ASSISTANT_TEXTS, before[1]["text"]],
    )
    after = messages(page)
    assert after == before, "regenerate must replace the reply under the same id"

    authorization = reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page) == before
    rows = stored(stack, session, "define", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == before[1]["id"]
    assert rows[1]["metadata"]["status"] == "complete"
    assert text_of(rows[1]) == before[1]["text"]


def test_reload_mid_reply_resumes_it_in_place(page: Any, stack: Stack) -> None:
    session = new_session()
    marker = f"resume-{uuid.uuid4().hex[:6]}"
    # Counts the assistant messages after every change of the DOM, from the first paint of every
    # load: a second copy of the reply, however briefly shown, is caught.
    page.add_init_script(COUNT_REPLIES_JS)
    open_chat(page, stack, session, "empathize")
    send(page, f"Tell me slowly {marker} [[standin words=40 chunks=30 delay_ms=150]]")
    full = f"Echo: Tell me slowly {marker}" + "".join(f" w{i}" for i in range(1, 41))

    # Part of the reply is on the page, and the server is still writing it: reload now.
    page.wait_for_function(
        "([selector, n]) => [...document.querySelectorAll(selector)]"
        ".some(e => e.textContent.length > n)",
        arg=[ASSISTANT_TEXTS, len(full) // 4],
    )
    seen = messages(page)[-1]["text"]
    assert 0 < len(seen) < len(full) and full.startswith(seen), seen
    with (
        page.expect_response(
            lambda r: r.request.method == "GET" and r.url.endswith("/steps/empathize/messages")
        ) as history,
        page.expect_response(
            lambda r: r.request.method == "GET" and r.url.endswith("/steps/empathize/stream")
        ) as resumed,
    ):
        authorization = reload_and_capture_token(page)
    # The history had the reply too, partly written: the resumed stream must replace that copy.
    loaded = history.value.json()["messages"]
    assert [m["role"] for m in loaded] == ["user", "assistant"], loaded
    assert loaded[1]["metadata"]["status"] == "streaming"
    assert full.startswith(text_of(loaded[1]))
    assert resumed.value.status == 200, "the reload found no reply to resume"
    assert resumed.value.request.all_headers().get("authorization") == authorization

    # The resumed stream continues the reply where it is on the page, to its end.
    assert wait_ready(page) == "ready"
    page.wait_for_function(
        "([selector, text]) => [...document.querySelectorAll(selector)]"
        ".some(e => e.textContent === text)",
        arg=[ASSISTANT_TEXTS, full],
    )
    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant"], shown
    assert shown[1]["text"] == full
    assert shown[1]["id"] == f"{shown[0]['id']}~reply"
    assert page.evaluate("window.__mostReplies") == 1, "the reply was shown twice at some point"
    assert not page.locator(STATUS_MARKERS).count()

    rows = stored(stack, session, "empathize", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == shown[1]["id"]
    assert rows[1]["metadata"]["status"] == "complete"
    assert text_of(rows[1]) == full
    assert model_requests_with(stack, marker) == 1, "the reload generated the reply again"

    # Once it is complete, a reload shows the stored reply and resumes nothing.
    reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page) == shown


def test_stop_stops_the_reply_on_the_server(page: Any, stack: Stack) -> None:
    session = new_session()
    marker = f"stop-{uuid.uuid4().hex[:6]}"
    open_chat(page, stack, session, "prototype")
    send(page, f"Write a long one {marker} [[standin words=300 delay_ms=120 chunks=60]]")
    full = f"Echo: Write a long one {marker}" + "".join(f" w{i}" for i in range(1, 301))

    page.wait_for_function(
        "(selector) => [...document.querySelectorAll(selector)]"
        ".some(e => e.textContent.length > 60)",
        arg=ASSISTANT_TEXTS,
    )
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/steps/prototype/stop")
    ) as stop_call:
        page.get_by_test_id("stop").click()
    assert stop_call.value.status == 200
    assert stop_call.value.json() == {"stopped": 1}
    assert stop_call.value.request.all_headers().get("authorization", "").startswith("Bearer ")
    assert wait_ready(page) == "ready"
    page.get_by_test_id("send").wait_for()
    # The page shows the reply as the server stored it once its stop is written: marked stopped.
    page.wait_for_function(
        "(selector) => [...document.querySelectorAll(selector)].at(-1)?.dataset.status"
        " === 'stopped'",
        arg=STATUS_MARKERS,
    )

    partial = messages(page)[-1]
    assert partial["role"] == "assistant"
    assert 0 < len(partial["text"]) < len(full), "Stop did not stop the reply mid-way"
    assert full.startswith(partial["text"]), partial["text"]
    marker_of_reply = page.locator(STATUS_MARKERS).last
    assert marker_of_reply.inner_text() == "stopped"
    assert marker_of_reply.is_visible()

    # The server stopped too: what it stored is the text on the page, marked stopped, for good.
    authorization = reload_and_capture_token(page)
    rows = stored(stack, session, "prototype", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == partial["id"]
    assert rows[1]["metadata"]["status"] == "stopped"
    assert text_of(rows[1]) == partial["text"]

    # After the reload: the same partial text, still marked stopped, never resumed or completed.
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page)[-1] == partial
    assert marker_of_reply.get_attribute("data-status") == "stopped"
    assert page.get_by_test_id("chat").get_attribute("data-status") == "ready"
    assert model_requests_with(stack, marker) == 1
    time.sleep(1)  # 8 of the stand-in's chunk intervals: a reply still running would grow
    assert text_of(stored(stack, session, "prototype", authorization)[1]) == partial["text"]
    assert messages(page)[-1] == partial


def test_upstream_fault_shows_an_error_and_retry_recovers(page: Any, stack: Stack) -> None:
    # `times` counts per set of knobs across the stand-in's life: start from a clean count.
    urllib.request.urlopen(
        urllib.request.Request(f"{stack.standin_url}/_standin/requests", method="DELETE"),
        timeout=10,
    ).close()
    session = new_session()
    open_chat(page, stack, session, "test")
    # Two upstream 500s: both of the function's attempts fail, so it answers 503 JSON.
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.startswith(stack.function_url)
    ) as answer:
        send(page, "Break please [[standin status=500 times=2]]")
    assert answer.value.status == 503
    assert wait_ready(page) == "error"
    error = page.get_by_test_id("error")
    error.wait_for()
    assert "busy right now" in error.inner_text()
    assert "model_unavailable" in error.inner_text()
    # The user's message stays; no assistant reply appears.
    assert [m["role"] for m in messages(page)] == ["user"]

    # The upstream has recovered: Retry answers the same message again.
    page.get_by_test_id("retry").click()
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert wait_ready(page) == "ready"
    assert not error.is_visible()
    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == "Echo: Break please"
    reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page) == shown


def test_outcomes_panel_shows_what_the_earlier_steps_found(page: Any, stack: Stack) -> None:
    session = new_session()
    phrase = f"night-shift nurses {uuid.uuid4().hex[:6]}"
    overview_route = f"{stack.function_url}/sessions/{session}"

    def overview_answer(response: Any) -> bool:
        return response.request.method == "GET" and response.url == overview_route

    # A new session: the server answers 404, the panel is empty and shows no error.
    with page.expect_response(overview_answer) as first:
        open_chat(page, stack, session, "empathize")
    assert first.value.status == 404
    wait_outcomes_loaded(page)
    panel = page.get_by_test_id("outcomes")
    assert "What we found so far" in panel.inner_text()
    assert page.get_by_test_id("outcomes-empty").is_visible()
    assert not page.get_by_test_id("outcomes-error").count()
    authorization = first.value.request.all_headers().get("authorization", "")
    assert authorization.startswith("Bearer "), "the overview GET carries no ID token"

    send(page, f"We interviewed {phrase} about handovers at 7 am")
    assert wait_ready(page) == "ready"

    # In Define the panel shows what Empathize found, once the server has summarised it.
    page.get_by_test_id("step-define").click()
    outcome = page.get_by_test_id("outcome-empathize")
    page.wait_for_function(
        "(phrase) => document.querySelector("
        "'[data-testid=outcome-empathize] [data-testid=outcome-text]')"
        "?.textContent.includes(phrase)",
        arg=phrase,
        timeout=25_000,
    )
    assert outcome.locator("h3").inner_text().lower() == "empathize"
    assert panel.locator("li[data-step]").count() == 1
    assert not page.get_by_test_id("outcome-define").count()
    status, body = status_of(stack, f"/sessions/{session}", authorization)
    assert status == 200, body
    assert [s["stepId"] for s in body["steps"]] == ["empathize"], body
    shown = outcome.get_by_test_id("outcome-text").inner_text()
    assert shown.strip() == body["steps"][0]["summary"].strip()

    # A later step sees it too; the current step's own outcome is never in the panel.
    page.get_by_test_id("step-ideate").click()
    page.get_by_test_id("empty").wait_for()
    assert phrase in outcome.get_by_test_id("outcome-text").inner_text()
    assert not page.get_by_test_id("outcome-ideate").count()

    # Back in Empathize: the panel has just fetched the session, outcome and all, and shows
    # nothing of Empathize itself.
    with page.expect_response(overview_answer) as again:
        page.get_by_test_id("step-empathize").click()
    assert again.value.status == 200
    fetched = again.value.json()["steps"]
    assert phrase in fetched[0]["summary"]
    page.wait_for_function(
        "() => document.querySelector('[data-testid=outcomes]')?.dataset.knownSteps === 'empathize'"
    )
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert not outcome.count()
    assert page.get_by_test_id("outcomes-empty").is_visible()
    assert phrase not in panel.inner_text()


def test_delete_session_asks_first_then_starts_a_new_one(page: Any, stack: Stack) -> None:
    session = new_session()
    open_chat(page, stack, session, "define")
    send(page, f"Our point of view {uuid.uuid4().hex[:6]}")
    assert wait_ready(page) == "ready"
    authorization = reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    history = f"/sessions/{session}/steps/define/messages"
    assert status_of(stack, history, authorization)[0] == 200

    dialogs: list[tuple[str, str]] = []
    accept = False
    deletes: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append((dialog.type, dialog.message))
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)

    # Asked first; cancelled, nothing is sent and the session stays on the page.
    page.get_by_test_id("delete-session").click()
    assert len(dialogs) == 1, "no confirmation was asked"
    assert dialogs[0][0] == "confirm"
    assert session in dialogs[0][1]
    page.wait_for_timeout(300)  # lets a DELETE the page might still send reach the listener
    assert not deletes
    assert page.get_by_test_id("delete-session").inner_text() == "Delete session"
    assert not page.get_by_test_id("delete-result").count()
    assert f"session={session}" in page.url
    assert [m["role"] for m in messages(page)] == ["user", "assistant"]

    # Confirmed: DELETE with the ID token, then a fresh session.
    accept = True
    session_route = f"{stack.function_url}/sessions/{session}"
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url == session_route
    ) as deleted:
        page.get_by_test_id("delete-session").click()
    assert len(dialogs) == 2
    assert deleted.value.status == 200
    assert deleted.value.request.all_headers().get("authorization") == authorization
    body = deleted.value.json()
    assert body["sessionId"] == session
    # At least the session, the step, the message and its reply.
    assert body["deletedDocuments"] >= 4, body

    # The old session is gone: its history and its overview answer 404.
    assert status_of(stack, history, authorization)[0] == 404
    assert status_of(stack, f"/sessions/{session}", authorization)[0] == 404

    # The page is on a new, empty session, and says what happened.
    result = page.get_by_test_id("delete-result")
    result.wait_for()
    assert session in result.inner_text() and "Deleted" in result.inner_text()
    page.wait_for_function(
        "(old) => new URLSearchParams(location.search).get('session') !== old", arg=session
    )
    fresh = page.evaluate("() => new URLSearchParams(location.search).get('session')")
    assert fresh and fresh != session
    assert page.get_by_test_id("session-input").input_value() == fresh
    page.get_by_test_id("empty").wait_for()
    assert messages(page) == []
    assert page.get_by_test_id("step-define").get_attribute("aria-pressed") == "true"
    wait_outcomes_loaded(page)
    assert page.get_by_test_id("outcomes-empty").is_visible()
    assert deletes == [session_route]
    # Still gone a moment later (the deleted reply's background summary may have landed since).
    assert status_of(stack, history, authorization)[0] == 404
    assert status_of(stack, f"/sessions/{session}", authorization)[0] == 404


def test_screenshot_of_a_conversation(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A tidy conversation for docs/screenshot.png (also checks two turns in one step)."""
    open_chat(page, stack, f"team-blue-{uuid.uuid4().hex[:4]}", "ideate")
    for text in (
        "How might we help first-year students find a study group?",
        "Give me three wild ideas for the first week of term.",
    ):
        send(page, text)
        assert wait_ready(page) == "ready"
    page.get_by_test_id("message-input").fill("Which idea is the easiest to prototype?")
    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[3]["text"] == "Echo: Give me three wild ideas for the first week of term."
    # The committed screenshot is rewritten only on request, so a test run leaves git clean.
    target = SCREENSHOT
    if SCREENSHOT.exists() and not os.environ.get("UPDATE_SCREENSHOT"):
        target = tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 860, "height": 660})
    page.screenshot(path=str(target))
