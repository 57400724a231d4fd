"""End to end in a real Chromium: the demo page, useChat, the function, Firestore and sign-in.

The module starts its own stack on free ports: the Firebase Auth emulator (anonymous sign-in, so
every request carries a real, if unsigned, ID token), the function under gunicorn with
AUTH_MODE=firebase and thought summaries and Google Search on (so every reply has a reasoning
part and two sources), and the demo page built with `vite build` and served by `vite preview`,
twice: as is, and with App Check configured. The Firestore and Cloud Storage emulators and the
Gemini stand-in come from conftest. The stand-in is steered through directives in the message
text, exactly as a person trying the page would.

Needs Debian's Chromium (`ensure_apt chromium chromium`), the Python `playwright` package and the
demo's npm packages (`ensure_npm demo`); without them the tests fail, they never skip.
Set UPDATE_SCREENSHOT=1 to rewrite docs/screenshot.png (it is written anyway when missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import urllib.error
import urllib.request
import uuid
import zlib
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
USER = "[data-testid=message][data-role=user]"

# The second build of the page turns App Check on with a debug token; the test answers the SDK's
# token exchange itself (no network here) with APP_CHECK_TOKEN.
APP_CHECK_DEBUG_TOKEN = "e2e-debug-token-0b1c"
APP_CHECK_APP_ID = "1:123456789012:web:0e2e0e2e0e2e0e2e"
APP_CHECK_TOKEN = "e2e-app-check-token"
APP_CHECK_EXCHANGE = (
    f"https://content-firebaseappcheck.googleapis.com/v1/projects/{support.PROJECT}"
    f"/apps/{APP_CHECK_APP_ID}:exchangeDebugToken"
)
# What the stand-in thinks and cites when the function asks for thoughts and Google Search.
THOUGHT_SUMMARY = "**Reading the request**\n\nThe team wants an echo, so I will echo it."
SOURCES = [
    ("example.com", "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-a"),
    ("example.org", "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-b"),
]

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
    app_check_demo_url: str  # the same page built with App Check configured


@pytest.fixture(scope="module")
def stack(
    emulator: str,
    standin_service: support.Service,
    storage_emulator: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    _require_tools()
    tmp = tmp_path_factory.mktemp("browser")
    auth_port, function_port, demo_port, app_check_port = (support.free_port() for _ in range(4))
    function_url = f"http://127.0.0.1:{function_port}"
    page_env = {
        "VITE_CHAT_URL": function_url,
        "VITE_FIREBASE_PROJECT": support.PROJECT,
        "VITE_AUTH_EMULATOR_URL": f"http://127.0.0.1:{auth_port}",
    }
    app_check_env = {
        **page_env,
        "VITE_FIREBASE_APP_ID": APP_CHECK_APP_ID,
        "VITE_APP_CHECK_SITE_KEY": "e2e-recaptcha-enterprise-site-key",
        "VITE_APP_CHECK_DEBUG_TOKEN": APP_CHECK_DEBUG_TOKEN,
    }
    services: list[support.Service] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            # The Auth emulator takes tens of seconds of CPU to start: build the pages meanwhile
            # (about a second each).
            auth = pool.submit(support.start_auth_emulator, tmp / "auth", port=auth_port)
            support.build_demo(tmp / "dist", page_env)
            support.build_demo(tmp / "dist-app-check", app_check_env)
            services.append(support.start_demo(tmp / "dist", port=demo_port))
            services.append(support.start_demo(tmp / "dist-app-check", port=app_check_port))
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
                "ALLOWED_ORIGINS": (
                    f"http://127.0.0.1:{demo_port},http://127.0.0.1:{app_check_port}"
                ),
                "THREADS": "32",
                "RATE_LIMIT_PER_MINUTE": "0",
                "GEMINI_RETRY_ATTEMPTS": "2",
                "GEMINI_RETRY_INITIAL_DELAY_SECONDS": "0.05",
                # Every reply then has the stand-in's thought summary and two sources.
                "GEMINI_INCLUDE_THOUGHTS": "true",
                "GEMINI_GOOGLE_SEARCH": "true",
                "XDG_RUNTIME_DIR": str(tmp / "gunicorn"),
            },
            port=function_port,
        )
        services.append(function)
        yield Stack(
            f"http://127.0.0.1:{demo_port}",
            function_url,
            standin_service.url,
            function,
            f"http://127.0.0.1:{app_check_port}",
        )
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


def open_chat(
    page: Any, stack: Stack, session: str, step: str = "empathize", demo_url: str = ""
) -> None:
    page.goto(f"{demo_url or stack.demo_url}/?session={session}&step={step}")
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


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real, one-colour PNG: the function checks the signature, the browser must draw it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = (b"\x00" + bytes(rgb) * width) * height  # filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def seen_by_model(media_type: str, data: bytes) -> str:
    """What the stand-in appends to its echo for a file it received inline."""
    return f"[{media_type}, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}]"


def upload(name: str, media_type: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": media_type, "buffer": data}


def drawn_images(page: Any, selector: str) -> list[dict[str, Any]]:
    """The images under `selector` once each has loaded: their src scheme and natural width."""
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector
    )
    return page.eval_on_selector_all(
        selector,
        "images => images.map(i => ({scheme: i.src.split(':')[0], width: i.naturalWidth}))",
    )


# Pastes a file into the message box as a browser does when an image is on the clipboard.
PASTE_FILE_JS = """
([name, type, bytes, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(bytes)], name, { type }));
  if (text) data.setData("text/plain", text);
  const input = document.querySelector("[data-testid=message-input]");
  input.focus();
  const paste = new ClipboardEvent("paste", {
    clipboardData: data, bubbles: true, cancelable: true,
  });
  input.dispatchEvent(paste);
  return paste.defaultPrevented;
}
"""


def function_requests(page: Any, stack: Stack) -> list[Any]:
    """Every request the page sends to the function from now on (not CORS preflights)."""
    seen: list[Any] = []
    page.on(
        "request",
        lambda r: (
            seen.append(r)
            if r.url.startswith(stack.function_url) and r.method != "OPTIONS"
            else None
        ),
    )
    return seen


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


def test_attached_image_reaches_the_model_and_stays_after_reload(
    page: Any, stack: Stack, tmp_path: Path
) -> None:
    session = new_session()
    wall = png_bytes(24, 16, (240, 200, 40))
    notes = f"Interview notes {uuid.uuid4().hex[:6]}: handovers at 7 am.\n".encode()
    sent = function_requests(page, stack)
    everything: list[str] = []
    page.on("request", lambda r: everything.append(r.url))
    open_chat(page, stack, session, "empathize")

    # Picked files show as previews first, each removable.
    page.get_by_test_id("file-input").set_input_files(
        [
            upload("wall.png", "image/png", wall),
            upload("notes.txt", "text/plain", notes),
            upload("spare.png", "image/png", png_bytes(4, 4, (0, 0, 0))),
        ]
    )
    tray = page.get_by_test_id("attachment")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=attachment]')]"
        ".filter(a => a.dataset.ready === 'true').length === 3"
    )
    assert [w["width"] for w in drawn_images(page, "[data-testid=attachment] img")] == [24, 4]
    tray.filter(has_text="notes.txt").wait_for()
    page.locator("[data-testid=attachment][data-name='spare.png']").get_by_test_id(
        "attachment-remove"
    ).click()
    assert [tray.nth(i).get_attribute("data-name") for i in range(tray.count())] == [
        "wall.png",
        "notes.txt",
    ]

    with page.expect_request(lambda r: r.method == "POST" and r.url == f"{stack.function_url}/"):
        send(page, "Our sticky-note wall")
    assert wait_ready(page) == "ready"
    assert not tray.count(), "the previews stay after sending"

    # The model got both files whole, in their order.
    expected = (
        "Echo: Our sticky-note wall "
        f"{seen_by_model('image/png', wall)} {seen_by_model('text/plain', notes)}"
    )
    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == expected
    # Only the last message goes to the function, with its files as data: URLs.
    body = json.loads(sent[-1].post_data)
    assert "messages" not in body and body["message"]["role"] == "user"
    files = [part for part in body["message"]["parts"] if part["type"] == "file"]
    assert [(f["filename"], f["mediaType"]) for f in files] == [
        ("wall.png", "image/png"),
        ("notes.txt", "text/plain"),
    ]
    assert all(f["url"].startswith(f"data:{f['mediaType']};base64,") for f in files)

    # Just sent: the image is drawn from its data: URL, the text file is a chip.
    user_images = f"{USER} [data-testid=file-image]"
    assert drawn_images(page, user_images) == [{"scheme": "data", "width": 24}]
    assert page.locator(USER).get_by_test_id("file-chip").inner_text().endswith("notes.txt")

    # After a reload the stored image comes from the function's file route, fetched with the
    # ID token and shown from a blob: URL.
    with page.expect_response(
        lambda r: r.request.method == "GET" and "/files/" in r.url and r.url.endswith("/0")
    ) as image_call:
        authorization = reload_and_capture_token(page)
    assert image_call.value.status == 200
    assert image_call.value.request.all_headers().get("authorization") == authorization
    page.locator(user_images).wait_for()
    assert drawn_images(page, user_images) == [{"scheme": "blob", "width": 24}]
    assert messages(page) == shown

    # The text file downloads through the same authenticated fetch, bytes unchanged.
    with page.expect_download() as download:
        page.locator(USER).get_by_test_id("file-chip").click()
    assert download.value.suggested_filename == "notes.txt"
    saved = tmp_path / "notes.txt"
    download.value.save_as(saved)
    assert saved.read_bytes() == notes

    # App Check is not configured for this page: no token header, nothing sent anywhere else,
    # and its code (a chunk of its own) never loaded.
    assert sent and not [r.url for r in sent if "x-firebase-appcheck" in r.all_headers()]
    scripts = {url for url in everything if url.startswith(stack.demo_url) and url.endswith(".js")}
    assert len(scripts) == 1, scripts
    assert all(url.startswith(("http://127.0.0.1:", "data:", "blob:")) for url in everything), [
        url for url in everything if not url.startswith("http://127.0.0.1:")
    ]


def test_a_pasted_image_is_sent_without_text(page: Any, stack: Stack) -> None:
    session = new_session()
    sketch = png_bytes(10, 12, (30, 120, 220))
    open_chat(page, stack, session, "prototype")

    # Cells copied from a spreadsheet come with a picture of them: the text is what was meant.
    cells = ["image.png", "image/png", list(sketch), "Persona\tNeed"]
    assert not page.evaluate(PASTE_FILE_JS, cells), "the text paste goes ahead"
    assert not page.get_by_test_id("attachment").count()

    assert page.evaluate(PASTE_FILE_JS, ["image.png", "image/png", list(sketch), ""])
    page.locator("[data-testid=attachment][data-ready=true]").wait_for()
    assert drawn_images(page, "[data-testid=attachment] img") == [{"scheme": "data", "width": 10}]
    assert page.get_by_test_id("message-input").input_value() == ""

    # A photo of the wall may go alone.
    page.get_by_test_id("send").click()
    assert wait_ready(page) == "ready"
    shown = messages(page)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[0]["text"] == ""
    reply = shown[1]["text"]
    assert reply.startswith("Echo:") and reply.endswith(seen_by_model("image/png", sketch)), reply
    assert drawn_images(page, f"{USER} [data-testid=file-image]") == [
        {"scheme": "data", "width": 10}
    ]

    reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    assert messages(page) == shown
    page.locator(f"{USER} [data-testid=file-image]").wait_for()
    assert drawn_images(page, f"{USER} [data-testid=file-image]") == [
        {"scheme": "blob", "width": 10}
    ]


def test_files_the_function_would_refuse_are_not_sent(page: Any, stack: Stack) -> None:
    session = new_session()
    sent = function_requests(page, stack)
    open_chat(page, stack, session, "define")
    problem = page.get_by_test_id("attach-error")
    picker = page.get_by_test_id("file-input")

    # A type the function does not take, and a file over 5 MiB: refused here, with a reason.
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
    picker.set_input_files(upload("drawing.svg", "image/svg+xml", svg))
    problem.wait_for()
    assert "drawing.svg" in problem.inner_text() and "cannot be attached" in problem.inner_text()
    picker.set_input_files(upload("huge.png", "image/png", b"\x89PNG" + bytes(5 * 1024 * 1024)))
    page.wait_for_function(
        "(t) => document.querySelector('[data-testid=attach-error]')?.textContent.includes(t)",
        arg='"huge.png" is too large',
    )
    assert not page.get_by_test_id("attachment").count()
    assert page.get_by_test_id("send").is_disabled()
    page.get_by_test_id("message-input").press("Enter")
    page.wait_for_timeout(300)  # lets a POST the page might still send reach the listener
    assert not [r.url for r in sent if r.method == "POST"]
    assert messages(page) == []

    # The function has the last word: a "PNG" that is not one passes here and is refused there,
    # with its JSON error shown, and nothing is stored.
    picker.set_input_files(upload("fake.png", "image/png", b"this is not a picture"))
    page.locator("[data-testid=attachment][data-ready=true]").wait_for()
    assert not problem.count()
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url == f"{stack.function_url}/"
    ) as answer:
        send(page, "Is this our prototype?")
    assert answer.value.status == 400
    assert answer.value.json()["error"]["code"] == "file_content_mismatch"
    assert wait_ready(page) == "error"
    assert "(file_content_mismatch)" in page.get_by_test_id("error-text").inner_text()
    assert not page.get_by_test_id("retry").count(), "it would only be refused again"
    # The refused message goes back into the composer, text and file, to be fixed.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=message-input]').value"
        " === 'Is this our prototype?'"
    )
    assert messages(page) == []
    assert page.get_by_test_id("attachment").count() == 1
    assert page.get_by_test_id("attachment").get_attribute("data-name") == "fake.png"
    assert page.get_by_test_id("attachment").get_attribute("data-ready") == "true"
    assert page.get_by_test_id("send").is_enabled()
    authorization = reload_and_capture_token(page)
    page.get_by_test_id("empty").wait_for()
    assert status_of(stack, f"/sessions/{session}/steps/define/messages", authorization)[0] == 404


def test_reasoning_and_sources_show_live_and_after_reload(page: Any, stack: Stack) -> None:
    session = new_session()
    open_chat(page, stack, session, "empathize")
    send(page, "What do we know about night shifts? [[standin chunks=10 delay_ms=400]]")

    # While the reply is written the thinking is open above it...
    page.wait_for_function(
        "() => document.querySelector('[data-testid=chat]')?.dataset.status === 'streaming'"
        " && document.querySelector('[data-testid=reasoning]')?.open === true"
    )
    assert page.get_by_test_id("reasoning").locator("summary").inner_text() == "Thinking…"
    assert wait_ready(page) == "ready"

    def check_reply() -> None:
        reply = page.locator(ASSISTANT)
        # ...and collapsed once it is done; the thoughts are never part of the text.
        reasoning = reply.get_by_test_id("reasoning")
        assert reasoning.evaluate("d => d.open") is False
        assert reasoning.locator("summary").inner_text() == "Thoughts"
        assert reply.get_by_test_id("message-text").inner_text() == (
            "Echo: What do we know about night shifts?"
        )
        text = reply.get_by_test_id("reasoning-text")
        assert text.evaluate("e => e.textContent") == THOUGHT_SUMMARY.replace("**", "")
        assert text.locator("strong").evaluate("e => e.textContent") == "Reading the request"
        assert not text.is_visible()
        reasoning.locator("summary").click()
        assert reasoning.evaluate("d => d.open") is True
        assert text.is_visible()
        # The sources under the reply, once each, opening in a new tab without a referrer.
        links = reply.get_by_test_id("source-link")
        assert [
            (links.nth(i).inner_text(), links.nth(i).get_attribute("href"))
            for i in range(links.count())
        ] == SOURCES
        for i in range(links.count()):
            assert links.nth(i).get_attribute("target") == "_blank"
            assert links.nth(i).get_attribute("rel") == "noopener noreferrer"

    check_reply()
    authorization = reload_and_capture_token(page)
    page.locator(ASSISTANT_TEXTS).wait_for()
    check_reply()
    reply = stored(stack, session, "empathize", authorization)[1]
    assert [p["type"] for p in reply["parts"]] == ["reasoning", "text", "source-url", "source-url"]
    assert reply["parts"][0]["text"] == THOUGHT_SUMMARY


def test_app_check_token_goes_with_every_call_to_the_function(page: Any, stack: Stack) -> None:
    """The App Check build sends X-Firebase-AppCheck on every route the page calls.

    No network here: the SDK's debug token exchange is answered by the test, and the reCAPTCHA
    Enterprise script that the provider loads on start (unused with a debug token) is refused.
    """
    exchanges: list[tuple[str, Any]] = []
    outside: list[str] = []
    cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*"}

    def exchange(route: Any) -> None:
        request = route.request
        if request.method == "OPTIONS":
            route.fulfill(status=204, headers=cors)
            return
        exchanges.append((request.url, json.loads(request.post_data)))
        route.fulfill(
            status=200,
            headers=cors,
            content_type="application/json",
            body=json.dumps({"token": APP_CHECK_TOKEN, "ttl": "3600s"}),
        )

    page.route("https://content-firebaseappcheck.googleapis.com/**", exchange)
    page.route("https://www.google.com/recaptcha/**", lambda route: route.abort())
    scripts: set[str] = set()
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith("http://127.0.0.1:") else None,
    )
    page.on("request", lambda r: scripts.add(r.url) if r.url.endswith(".js") else None)
    sent = function_requests(page, stack)
    session = new_session()
    step = f"/sessions/{session}/steps/ideate"
    open_chat(page, stack, session, "ideate", demo_url=stack.app_check_demo_url)

    # A message with an image, reloaded mid-reply (history, overview, stream, file), then
    # stopped, then the whole session deleted: every route the page knows.
    page.get_by_test_id("file-input").set_input_files(
        upload("wall.png", "image/png", png_bytes(8, 8, (200, 60, 60)))
    )
    page.locator("[data-testid=attachment][data-ready=true]").wait_for()
    send(page, "Ideas please [[standin words=120 chunks=60 delay_ms=250]]")
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].some(e => e.textContent.length > 20)",
        arg=ASSISTANT_TEXTS,
    )
    with page.expect_response(
        lambda r: r.request.method == "GET" and r.url.endswith(f"{step}/stream")
    ) as resumed:
        page.reload()
    wait_loaded(page)
    assert resumed.value.status == 200
    page.locator(f"{USER} [data-testid=file-image]").wait_for()
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"{step}/stop")
    ) as stopped:
        page.get_by_test_id("stop").click()
    assert stopped.value.status == 200
    assert wait_ready(page) == "ready"
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        page.get_by_test_id("delete-session").click()
    assert deleted.value.status == 200

    kinds = set()
    for request in sent:
        path = request.url[len(stack.function_url) :]
        headers = request.all_headers()
        assert headers.get("x-firebase-appcheck") == APP_CHECK_TOKEN, (request.method, path)
        assert headers.get("authorization", "").startswith("Bearer "), (request.method, path)
        kinds.add((request.method, re.sub(r"/files/.*", "/files/*", path.replace(session, "<s>"))))
    assert {
        ("POST", "/"),
        ("GET", "/sessions/<s>/steps/ideate/messages"),
        ("GET", "/sessions/<s>/steps/ideate/stream"),
        ("GET", "/sessions/<s>/steps/ideate/files/*"),
        ("POST", "/sessions/<s>/steps/ideate/stop"),
        ("GET", "/sessions/<s>"),
        ("DELETE", "/sessions/<s>"),
    } <= kinds, kinds
    # The SDK traded the configured debug token, for this app of this project.
    assert exchanges, "App Check never asked for a token"
    assert {url.split("?")[0] for url, _ in exchanges} == {APP_CHECK_EXCHANGE}
    assert {body["debug_token"] for _, body in exchanges} == {APP_CHECK_DEBUG_TOKEN}
    # The App Check SDK is the page's second script, loaded only in this build.
    assert len({url for url in scripts if url.startswith(stack.app_check_demo_url)}) == 2, scripts
    # Nothing else left the machine but the reCAPTCHA script, asked for and refused above.
    others = {url for url in outside if not url.startswith(APP_CHECK_EXCHANGE)}
    assert others <= {"https://www.google.com/recaptcha/enterprise.js?render=explicit"}, outside


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
