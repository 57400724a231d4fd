"""End to end in a real Chromium: the demo page, useChat, the function, Firestore and sign-in.

The module starts its own stack on free ports: the Firebase Auth emulator (anonymous sign-in, so
every request carries a real, if unsigned, ID token), the function under gunicorn with
AUTH_MODE=firebase and thought summaries and Google Search on (so every reply has a reasoning
part and two sources), and the demo page built with `vite build` and served by `vite preview`,
twice: as is, and with App Check configured. The Firestore and Cloud Storage emulators and the
Gemini stand-in come from conftest. The stand-in is steered through directives in the message
text, exactly as a person trying the page would.

The tests drive the page through `ChatPage`, which knows its markup (the `data-testid`s and
useChat's status on the chat), so that a test reads as what a person does and sees; what the
server stored is asked of the function directly, through `Stack`.

Needs Debian's Chromium (`ensure_apt chromium chromium`), the Python `playwright` package and the
demo's npm packages (`ensure_npm demo`); without them the tests fail, they never skip.

docs/screenshot.png is taken by `test_screenshot_of_a_conversation`; rewrite it with
`UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_browser.py -k screenshot` (it is
written anyway when missing).
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
from urllib.parse import parse_qs, urlsplit

import pytest

from standin.control import configure
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
# A phone held upright (an iPhone 12 to 15 is 390 CSS pixels wide).
PHONE = {"width": 390, "height": 844}

# What the page shows: the chat's useChat status, its messages and the last assistant reply.
ASSISTANT = "[data-testid=message][data-role=assistant]"
ASSISTANT_TEXTS = f"{ASSISTANT} [data-testid=message-text]"
STATUS_MARKERS = f"{ASSISTANT} [data-testid=reply-status]"
USER = "[data-testid=message][data-role=user]"
USER_IMAGES = f"{USER} [data-testid=file-image]"
TRAY_IMAGES = "[data-testid=attachment] img"

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

# What keeps a control out of a person's reach: the page wider than the window (so the row
# must be scrolled sideways to be seen whole), a control that sticks out of it, or one under
# something else. Each control is scrolled into view first, as a person would scroll to it.
UNREACHABLE_JS = """
() => {
  const root = document.documentElement;
  const width = root.clientWidth;
  const problems = [];
  if (root.scrollWidth > width) problems.push(`the page is ${root.scrollWidth} px wide`);
  const controls = document.querySelectorAll(
    "button, a[href], input:not([type=file]), textarea, summary");
  for (const control of controls) {
    if (control.getClientRects().length === 0) continue;  // not shown
    control.scrollIntoView({ block: "center", inline: "nearest" });
    const box = control.getBoundingClientRect();
    const name = control.dataset.testid || control.textContent.trim() || control.tagName;
    if (box.left < 0 || box.right > width) {
      problems.push(`${name} spans ${Math.round(box.left)}-${Math.round(box.right)} px`);
      continue;
    }
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    if (!control.contains(hit)) problems.push(`${name} is under ${hit?.outerHTML.slice(0, 80)}`);
  }
  window.scrollTo(0, 0);
  return problems;
}
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


def _json_call(request: urllib.request.Request) -> tuple[int, Any]:
    """The status and JSON body of a call, also when it is an error."""
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


@dataclass
class Stack:
    """The services behind the page, and what they hold: the function's routes called with a
    user's bearer token, the stand-in's record of model calls, and other users of the Auth
    emulator."""

    demo_url: str
    function_url: str
    standin_url: str
    auth_url: str
    function: support.Service
    app_check_demo_url: str  # the same page built with App Check configured

    def get(self, path: str, authorization: str) -> tuple[int, Any]:
        """GET a function route with a user's ID token: its status and JSON body."""
        request = urllib.request.Request(
            f"{self.function_url}{path}", headers={"Authorization": authorization}
        )
        return _json_call(request)

    def stored(self, session: str, step: str, authorization: str) -> list[dict[str, Any]]:
        """The step's messages as the function's GET returns them."""
        status, body = self.get(f"/sessions/{session}/steps/{step}/messages", authorization)
        assert status == 200, body
        return body["messages"]

    def model_requests_with(self, marker: str) -> int:
        """How many model calls the stand-in got whose last user text contains `marker`."""
        with urllib.request.urlopen(f"{self.standin_url}/_standin/requests", timeout=10) as answer:
            recorded = json.loads(answer.read())["requests"]
        count = 0
        for item in recorded:
            body = item.get("body")
            if ":streamGenerateContent" not in item["path"] or not isinstance(body, dict):
                continue
            users = [c for c in body.get("contents", []) if c.get("role") == "user"]
            if users and marker in json.dumps(users[-1]):
                count += 1
        return count

    def forget_model_requests(self) -> None:
        """`times` in a directive counts per set of knobs across the stand-in's life: this
        starts the count again."""
        request = urllib.request.Request(f"{self.standin_url}/_standin/requests", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()

    def another_user(self) -> str:
        """The bearer token of a new anonymous user, signed up with the Auth emulator as the
        page of someone else would."""
        request = urllib.request.Request(
            f"{self.auth_url}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=demo-api-key",
            data=json.dumps({"returnSecureToken": True}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        status, body = _json_call(request)
        assert status == 200, body
        return f"Bearer {body['idToken']}"

    def send_as(self, authorization: str, session: str, step: str, text: str) -> None:
        """One chat turn as `authorization`'s user, as useChat sends it; read to its end."""
        message_id = f"m-{uuid.uuid4().hex[:8]}"
        body = {
            "id": f"{session}/{step}",
            "message": {
                "id": message_id,
                "role": "user",
                "parts": [{"type": "text", "text": text}],
            },
            "trigger": "submit-message",
            "sessionId": session,
            "stepId": step,
        }
        request = urllib.request.Request(
            f"{self.function_url}/",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": authorization},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            assert response.read().rstrip().endswith(b"data: [DONE]")


class ChatPage:
    """The demo page as a person uses it: what they do (open, send, attach, stop, reload...) and
    what they see (messages, errors, outcomes), with the waits that make each reliable.

    `find(test_id)` gives any other element, for a check only one test makes; `page` is the
    Playwright page itself, for what is no user action (routes, network listeners).
    """

    def __init__(self, page: Any, stack: Stack) -> None:
        self.page = page
        self.stack = stack

    def find(self, test_id: str) -> Any:
        return self.page.get_by_test_id(test_id)

    # --- Where the page is ------------------------------------------------------------------

    def open(self, session: str, step: str = "empathize", demo_url: str = "") -> None:
        self.page.goto(f"{demo_url or self.stack.demo_url}/?session={session}&step={step}")
        self.wait_loaded()

    def wait_loaded(self) -> None:
        self.find("chat").wait_for()
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=auth-status]')"
            "?.textContent.startsWith('signed in')"
        )

    def reload(self) -> str:
        """Reload the page; returns the bearer token its history GET carried (it must carry
        one)."""
        with self.page.expect_request(
            lambda request: request.method == "GET" and request.url.endswith("/messages")
        ) as captured:
            self.page.reload()
        self.wait_loaded()
        authorization = captured.value.all_headers().get("authorization", "")
        assert authorization.startswith("Bearer "), "the history GET carries no ID token"
        return authorization

    def place(self) -> tuple[str, str]:
        """The session and step in the page's URL."""
        query = parse_qs(urlsplit(self.page.url).query)
        return query["session"][0], query["step"][0]

    def go_to_step(self, step: str) -> None:
        self.find(f"step-{step}").click()

    def current_step(self) -> str:
        """The step whose button is pressed (exactly one is)."""
        pressed = self.page.eval_on_selector_all(
            "[data-testid^=step-][aria-pressed=true]",
            "buttons => buttons.map(b => b.dataset.testid)",
        )
        assert len(pressed) == 1, pressed
        return pressed[0].removeprefix("step-")

    def wait_session_changed(self, old: str) -> str:
        """Until the URL names another session than `old`; returns it."""
        self.page.wait_for_function(
            "(old) => new URLSearchParams(location.search).get('session') !== old", arg=old
        )
        return self.place()[0]

    def delete_session(self, confirm: bool) -> list[tuple[str, str]]:
        """Click Delete session and answer its question; returns each dialog shown, as (type,
        message)."""
        dialogs: list[tuple[str, str]] = []

        def answer(dialog: Any) -> None:
            dialogs.append((dialog.type, dialog.message))
            if confirm:
                dialog.accept()
            else:
                dialog.dismiss()

        self.page.on("dialog", answer)
        try:
            self.find("delete-session").click()
        finally:
            self.page.remove_listener("dialog", answer)
        return dialogs

    def notice(self) -> str:
        """The notice under the session row (what a delete did), once shown."""
        self.find("delete-result").wait_for()
        return self.find("delete-result").inner_text()

    # --- Writing ----------------------------------------------------------------------------

    def type(self, text: str) -> None:
        self.find("message-input").fill(text)

    def draft(self) -> str:
        return self.find("message-input").input_value()

    def wait_draft(self, text: str) -> None:
        self.page.wait_for_function(
            "(text) => document.querySelector('[data-testid=message-input]').value === text",
            arg=text,
        )

    def send(self, text: str | None = None) -> None:
        """Type `text` (if given) and click Send."""
        if text is not None:
            self.type(text)
        self.find("send").click()

    def press_enter(self) -> None:
        self.find("message-input").press("Enter")

    def can_send(self) -> bool:
        return self.find("send").is_enabled()

    def attach(self, *files: dict[str, Any]) -> None:
        """Pick files with Attach's file picker."""
        self.find("file-input").set_input_files(list(files))

    def paste_file(self, name: str, media_type: str, data: bytes, text: str = "") -> bool:
        """Paste a file (and, if given, text beside it) into the message box; whether the page
        took the paste over from the browser."""
        return self.page.evaluate(PASTE_FILE_JS, [name, media_type, list(data), text])

    def wait_attachments_ready(self, count: int) -> None:
        """Until `count` attached files are read and ready to go."""
        self.page.wait_for_function(
            "(n) => [...document.querySelectorAll('[data-testid=attachment]')]"
            ".filter(a => a.dataset.ready === 'true').length === n",
            arg=count,
        )

    def attachments(self) -> list[tuple[str, bool]]:
        """The files above the message box, in order: (name, ready to send)."""
        shown = self.page.eval_on_selector_all(
            "[data-testid=attachment]",
            "items => items.map(a => [a.dataset.name, a.dataset.ready === 'true'])",
        )
        return [(name, ready) for name, ready in shown]

    def remove_attachment(self, name: str) -> None:
        self.page.locator(f"[data-testid=attachment][data-name='{name}']").get_by_test_id(
            "attachment-remove"
        ).click()

    def attach_problem(self, containing: str = "") -> str:
        """Why a file was left out, once it says `containing`."""
        self.page.wait_for_function(
            "(t) => document.querySelector('[data-testid=attach-error]')?.textContent.includes(t)",
            arg=containing,
        )
        return self.find("attach-error").inner_text()

    # --- The board ----------------------------------------------------------------------------

    def board_items(self) -> list[dict[str, str]]:
        """The board beside the chat: each item's id, kind and title, in the order shown."""
        return self.page.eval_on_selector_all(
            "[data-testid=board-item]",
            """items => items.map(item => ({
                id: item.dataset.itemId,
                kind: item.dataset.kind,
                title: item.querySelector('[data-testid=board-item-title]')?.textContent ?? '',
            }))""",
        )

    def wait_board_count(self, count: int) -> None:
        self.page.wait_for_function(
            "(n) => document.querySelectorAll('[data-testid=board-item]').length === n",
            arg=count,
            timeout=TIMEOUT_MS,
        )

    def tool_cards(self) -> list[dict[str, str]]:
        """The tool calls in the conversation: tool, state and what they were about."""
        return self.page.eval_on_selector_all(
            "[data-testid=tool-card]",
            """cards => cards.map(card => ({
                tool: card.dataset.tool,
                state: card.dataset.state,
                subject: card.querySelector('[data-testid=tool-subject]')?.textContent ?? '',
            }))""",
        )

    # --- The reply --------------------------------------------------------------------------

    def status(self) -> str:
        """useChat's status: submitted, streaming, ready or error."""
        return self.find("chat").get_attribute("data-status")

    def wait_for_reply(self, timeout: float = TIMEOUT_MS) -> str:
        """Wait until useChat has settled; returns its status (`ready` or `error`)."""
        self.page.wait_for_function(
            "() => ['ready', 'error'].includes("
            "document.querySelector('[data-testid=chat]')?.dataset.status)",
            timeout=timeout,
        )
        return self.status()

    def reply_lengths_while_streaming(self) -> list[int]:
        """Every length the last reply had on the page until the chat was ready again."""
        return self.page.evaluate(SAMPLE_REPLY_JS, ASSISTANT_TEXTS)

    def wait_reply_longer_than(self, length: int) -> None:
        self.page.wait_for_function(
            "([selector, n]) => [...document.querySelectorAll(selector)]"
            ".some(e => e.textContent.length > n)",
            arg=[ASSISTANT_TEXTS, length],
        )

    def wait_reply_text(self, text: str) -> None:
        """Until a reply on the page reads exactly `text`."""
        self.page.wait_for_function(
            "([selector, text]) => [...document.querySelectorAll(selector)]"
            ".some(e => e.textContent === text)",
            arg=[ASSISTANT_TEXTS, text],
        )

    def wait_replies_shown(self) -> None:
        """Until the page shows a reply (after a load, the history's)."""
        self.page.locator(ASSISTANT_TEXTS).first.wait_for()

    def wait_thinking_live(self) -> None:
        """Until the reply streams with its thinking open above it."""
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=chat]')?.dataset.status === 'streaming'"
            " && document.querySelector('[data-testid=reasoning]')?.open === true"
        )

    def last_reply(self) -> Any:
        return self.page.locator(ASSISTANT).last

    def reply_marker(self) -> Any:
        """The status marker of the last reply that has one (stopped, error...)."""
        return self.page.locator(STATUS_MARKERS).last

    def reply_markers(self) -> list[str]:
        return self.page.eval_on_selector_all(STATUS_MARKERS, "ms => ms.map(m => m.dataset.status)")

    def wait_last_marker(self, status: str) -> None:
        self.page.wait_for_function(
            "([selector, status]) => [...document.querySelectorAll(selector)].at(-1)"
            "?.dataset.status === status",
            arg=[STATUS_MARKERS, status],
        )

    def messages(self) -> list[dict[str, str]]:
        """The conversation on the page: each message's id, role and text."""
        return self.page.eval_on_selector_all(
            "[data-testid=message]",
            """items => items.map(item => ({
                id: item.dataset.messageId,
                role: item.dataset.role,
                text: item.querySelector('[data-testid=message-text]').textContent,
            }))""",
        )

    def is_empty(self) -> bool:
        return self.find("empty").is_visible()

    def wait_empty(self) -> str:
        """Until the chat says it has no messages; returns what it says."""
        self.find("empty").wait_for()
        return self.find("empty").inner_text()

    def watch_most_replies(self) -> None:
        """From the next load on, count the most replies the page ever shows at once."""
        self.page.add_init_script(COUNT_REPLIES_JS)

    def most_replies(self) -> int:
        return self.page.evaluate("window.__mostReplies")

    def regenerate(self) -> None:
        self.find("regenerate").click()

    def stop(self) -> Any:
        """Click Stop; returns the function's answer to the stop it sent."""
        session, step = self.place()
        with self.response_to("POST", f"/sessions/{session}/steps/{step}/stop") as stopped:
            self.find("stop").click()
        return stopped.value

    def wait_send_button(self) -> None:
        """Until Send is back where Stop was."""
        self.find("send").wait_for()

    def error_text(self) -> str:
        """The error under the conversation, once shown."""
        self.find("error").wait_for()
        return self.find("error-text").inner_text()

    def has_error(self) -> bool:
        return self.find("error").is_visible()

    def can_retry(self) -> bool:
        return self.find("retry").count() > 0

    def retry(self) -> None:
        self.find("retry").click()

    # --- Files in the conversation ----------------------------------------------------------

    def drawn_images(self, selector: str) -> list[dict[str, Any]]:
        """The images under `selector` once each has loaded: their src scheme and natural
        width."""
        self.page.locator(selector).first.wait_for()
        self.page.wait_for_function(
            "(s) => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector
        )
        return self.page.eval_on_selector_all(
            selector,
            "images => images.map(i => ({scheme: i.src.split(':')[0], width: i.naturalWidth}))",
        )

    def sent_file_chip(self) -> Any:
        """The chip of the (one) file sent that is not drawn; a click downloads it."""
        return self.page.locator(USER).get_by_test_id("file-chip")

    # --- What earlier steps found -----------------------------------------------------------

    def wait_outcomes_loaded(self) -> None:
        self.page.wait_for_function(
            "() => document.querySelector('[data-testid=outcomes]')?.dataset.state === 'ready'"
        )

    def wait_outcomes_of(self, steps: str) -> None:
        """Until the panel's latest overview knows exactly `steps` (space separated)."""
        self.page.wait_for_function(
            "(steps) => document.querySelector('[data-testid=outcomes]')?.dataset.knownSteps"
            " === steps",
            arg=steps,
        )

    def outcomes_text(self) -> str:
        """The whole panel as it reads."""
        return self.find("outcomes").inner_text()

    def outcome_text(self, step: str, containing: str = "", timeout: float = TIMEOUT_MS) -> str:
        """The outcome of `step` in the panel, once it says `containing`."""
        self.page.wait_for_function(
            "([step, text]) => document.querySelector("
            "`[data-testid=outcome-${step}] [data-testid=outcome-text]`)"
            "?.textContent.includes(text)",
            arg=[step, containing],
            timeout=timeout,
        )
        return self.find(f"outcome-{step}").get_by_test_id("outcome-text").inner_text()

    def outcomes(self) -> list[dict[str, str]]:
        """The outcomes in the panel, in order: the step, its heading as shown and its text."""
        return self.page.eval_on_selector_all(
            "[data-testid=outcomes] li[data-step]",
            """items => items.map(item => ({
                step: item.dataset.step,
                heading: item.querySelector('h3').innerText,
                text: item.querySelector('[data-testid=outcome-text]')?.innerText ?? null,
            }))""",
        )

    def says_no_outcomes(self) -> bool:
        return self.find("outcomes-empty").is_visible()

    def outcomes_failed(self) -> bool:
        return self.find("outcomes-error").count() > 0

    # --- The session is not ours ------------------------------------------------------------

    def session_missing(self) -> str:
        """What the page says once the function answered that the session is not ours."""
        self.find("session-missing").wait_for()
        return self.find("session-missing").inner_text()

    def start_new_session(self) -> None:
        self.find("start-new-session").click()

    # --- Layout -----------------------------------------------------------------------------

    def unreachable(self) -> list[str]:
        """Why any control is out of reach in this window (nothing, when all is well)."""
        return self.page.evaluate(UNREACHABLE_JS)

    # --- The function's traffic -------------------------------------------------------------

    def _to_function(self, method: str, path: str | re.Pattern[str]) -> Callable[[Any], bool]:
        def matches(request: Any) -> bool:
            if request.method != method or not request.url.startswith(self.stack.function_url):
                return False
            rest = request.url[len(self.stack.function_url) :]
            return bool(path.fullmatch(rest)) if isinstance(path, re.Pattern) else rest == path

        return matches

    def request_to(self, method: str, path: str | re.Pattern[str]) -> Any:
        """A context manager that waits for the page's next such request to the function."""
        return self.page.expect_request(self._to_function(method, path))

    def response_to(self, method: str, path: str | re.Pattern[str]) -> Any:
        """A context manager that waits for the function's answer to such a request."""
        matches = self._to_function(method, path)
        return self.page.expect_response(lambda response: matches(response.request))

    def function_requests(self) -> list[Any]:
        """Every request the page sends to the function from now on (not CORS preflights)."""
        seen: list[Any] = []
        self.page.on(
            "request",
            lambda r: (
                seen.append(r)
                if r.url.startswith(self.stack.function_url) and r.method != "OPTIONS"
                else None
            ),
        )
        return seen


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
    auth_url = f"http://127.0.0.1:{auth_port}"
    page_env = {
        "VITE_CHAT_URL": function_url,
        "VITE_FIREBASE_PROJECT": support.PROJECT,
        "VITE_AUTH_EMULATOR_URL": auth_url,
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
                "ANONYMOUS_USERS": "allow",  # the demo signs in anonymously
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
                # Gemini 3 takes search and the board's functions in one request.
                "GEMINI_MODEL": "gemini-3-flash-preview",
                # A step's outcome is written once the step has been quiet this long (10 s by
                # default): short, so the outcomes panel fills while a test looks at it.
                "SUMMARY_DELAY_SECONDS": "0.3",
                "XDG_RUNTIME_DIR": str(tmp / "gunicorn"),
            },
            port=function_port,
        )
        services.append(function)
        yield Stack(
            f"http://127.0.0.1:{demo_port}",
            function_url,
            standin_service.url,
            auth_url,
            function,
            f"http://127.0.0.1:{app_check_port}",
        )
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


def open_profile(playwright: Any, folder: Path) -> Any:
    """A Chromium with a profile of its own: its own anonymous Firebase user."""
    context = playwright.chromium.launch_persistent_context(
        str(folder),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 860, "height": 760},
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture(scope="module")
def browser_context(
    playwright: Any, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    context = open_profile(playwright, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def teammate(playwright: Any, stack: Stack, tmp_path: Path) -> Iterator[ChatPage]:
    """A second person on the team: another browser profile, so another anonymous user."""
    context = open_profile(playwright, tmp_path / "teammate-profile")
    try:
        yield ChatPage(context.new_page(), stack)
    finally:
        context.close()


@pytest.fixture
def chat(browser_context: Any, stack: Stack) -> Iterator[ChatPage]:
    """The demo page in a fresh tab; an uncaught exception in the page fails the test."""
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield ChatPage(page, stack)
    page.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    # The function never crashed a request in the meantime.
    assert not [line for line in stack.function.output if "Traceback" in line], "\n".join(
        stack.function.output[-40:]
    )


# --- Helpers --------------------------------------------------------------------------------


def text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


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


# --- Tests ----------------------------------------------------------------------------------


def test_reply_streams_in_and_history_survives_reload(chat: ChatPage) -> None:
    chat.open(new_session(), "ideate")
    assert chat.is_empty()

    with chat.request_to("POST", "/"):
        chat.send(
            "How might we help new students find a study group? [[standin chunks=8 delay_ms=300]]"
        )
    lengths = chat.reply_lengths_while_streaming()
    assert chat.wait_for_reply() == "ready"
    expected = "Echo: How might we help new students find a study group?"
    assert lengths[-1] == len(expected)
    partial = [n for n in lengths if 0 < n < len(expected)]
    assert len(set(partial)) >= 3, f"the reply did not grow in steps: lengths seen {lengths}"

    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == expected
    # useChat took over the server's id from the `start` chunk.
    assert shown[1]["id"] == f"{shown[0]['id']}~reply"
    assert chat.find("message-meta").last.inner_text().endswith("gemini-3-flash-preview")

    # The session and step are in the URL, so a reload shows the stored history.
    chat.reload()
    assert chat.messages() == shown
    assert chat.current_step() == "ideate"

    # Another step has its own (empty) history; coming back loads this one again.
    chat.go_to_step("define")
    chat.wait_empty()
    assert "step=define" in chat.page.url
    chat.go_to_step("ideate")
    chat.wait_replies_shown()
    assert chat.messages() == shown


def test_regenerate_replaces_the_reply_in_place(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    marker = f"regen-{uuid.uuid4().hex[:6]}"
    chat.open(session, "define")
    chat.send(f"Define the problem {marker} [[standin chunks=4 delay_ms=150]]")
    assert chat.wait_for_reply() == "ready"
    before = chat.messages()
    assert [m["role"] for m in before] == ["user", "assistant"]

    chat.regenerate()
    eventually(lambda: stack.model_requests_with(marker) == 2, what="the regenerate request")
    assert chat.wait_for_reply() == "ready"
    chat.wait_reply_text(before[1]["text"])
    after = chat.messages()
    assert after == before, "regenerate must replace the reply under the same id"

    authorization = chat.reload()
    chat.wait_replies_shown()
    assert chat.messages() == before
    rows = stack.stored(session, "define", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == before[1]["id"]
    assert rows[1]["metadata"]["status"] == "complete"
    assert text_of(rows[1]) == before[1]["text"]


def test_reload_mid_reply_resumes_it_in_place(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    step = f"/sessions/{session}/steps/empathize"
    marker = f"resume-{uuid.uuid4().hex[:6]}"
    # Counts the assistant messages after every change of the DOM, from the first paint of every
    # load: a second copy of the reply, however briefly shown, is caught.
    chat.watch_most_replies()
    chat.open(session, "empathize")
    chat.send(f"Tell me slowly {marker} [[standin words=40 chunks=30 delay_ms=150]]")
    full = f"Echo: Tell me slowly {marker}" + "".join(f" w{i}" for i in range(1, 41))

    # Part of the reply is on the page, and the server is still writing it: reload now.
    chat.wait_reply_longer_than(len(full) // 4)
    seen = chat.messages()[-1]["text"]
    assert 0 < len(seen) < len(full) and full.startswith(seen), seen
    with (
        chat.response_to("GET", f"{step}/messages") as history,
        chat.response_to("GET", f"{step}/stream") as resumed,
    ):
        authorization = chat.reload()
    # The history had the reply too, partly written: the resumed stream must replace that copy.
    loaded = history.value.json()["messages"]
    assert [m["role"] for m in loaded] == ["user", "assistant"], loaded
    assert loaded[1]["metadata"]["status"] == "streaming"
    assert full.startswith(text_of(loaded[1]))
    assert resumed.value.status == 200, "the reload found no reply to resume"
    assert resumed.value.request.all_headers().get("authorization") == authorization

    # The resumed stream continues the reply where it is on the page, to its end.
    assert chat.wait_for_reply() == "ready"
    chat.wait_reply_text(full)
    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant"], shown
    assert shown[1]["text"] == full
    assert shown[1]["id"] == f"{shown[0]['id']}~reply"
    assert chat.most_replies() == 1, "the reply was shown twice at some point"
    assert chat.reply_markers() == []

    rows = stack.stored(session, "empathize", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == shown[1]["id"]
    assert rows[1]["metadata"]["status"] == "complete"
    assert text_of(rows[1]) == full
    assert stack.model_requests_with(marker) == 1, "the reload generated the reply again"

    # Once it is complete, a reload shows the stored reply and resumes nothing.
    chat.reload()
    chat.wait_replies_shown()
    assert chat.messages() == shown


def test_stop_stops_the_reply_on_the_server(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    marker = f"stop-{uuid.uuid4().hex[:6]}"
    chat.open(session, "prototype")
    chat.send(f"Write a long one {marker} [[standin words=300 delay_ms=120 chunks=60]]")
    full = f"Echo: Write a long one {marker}" + "".join(f" w{i}" for i in range(1, 301))

    chat.wait_reply_longer_than(60)
    stopped = chat.stop()
    assert stopped.status == 200
    assert stopped.json() == {"stopped": 1}
    assert stopped.request.all_headers().get("authorization", "").startswith("Bearer ")
    assert chat.wait_for_reply() == "ready"
    chat.wait_send_button()
    # The page shows the reply as the server stored it once its stop is written: marked stopped.
    chat.wait_last_marker("stopped")

    partial = chat.messages()[-1]
    assert partial["role"] == "assistant"
    assert 0 < len(partial["text"]) < len(full), "Stop did not stop the reply mid-way"
    assert full.startswith(partial["text"]), partial["text"]
    assert chat.reply_marker().inner_text() == "stopped"
    assert chat.reply_marker().is_visible()

    # The server stopped too: what it stored is the text on the page, marked stopped, for good.
    authorization = chat.reload()
    rows = stack.stored(session, "prototype", authorization)
    assert [m["role"] for m in rows] == ["user", "assistant"], rows
    assert rows[1]["id"] == partial["id"]
    assert rows[1]["metadata"]["status"] == "stopped"
    assert text_of(rows[1]) == partial["text"]

    # After the reload: the same partial text, still marked stopped, never resumed or completed.
    chat.wait_replies_shown()
    assert chat.messages()[-1] == partial
    assert chat.reply_marker().get_attribute("data-status") == "stopped"
    assert chat.status() == "ready"
    assert stack.model_requests_with(marker) == 1
    time.sleep(1)  # 8 of the stand-in's chunk intervals: a reply still running would grow
    assert text_of(stack.stored(session, "prototype", authorization)[1]) == partial["text"]
    assert chat.messages()[-1] == partial


def test_upstream_fault_shows_an_error_and_retry_recovers(chat: ChatPage, stack: Stack) -> None:
    stack.forget_model_requests()
    chat.open(new_session(), "test")
    # Two upstream 500s: both of the function's attempts fail, so it answers 503 JSON.
    with chat.response_to("POST", "/") as answer:
        chat.send("Break please [[standin status=500 times=2]]")
    assert answer.value.status == 503
    assert chat.wait_for_reply() == "error"
    error = chat.error_text()
    assert "busy right now" in error
    assert "model_unavailable" in error
    # The user's message stays; no assistant reply appears.
    assert [m["role"] for m in chat.messages()] == ["user"]

    # The upstream has recovered: Retry answers the same message again.
    chat.retry()
    chat.wait_replies_shown()
    assert chat.wait_for_reply() == "ready"
    assert not chat.has_error()
    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == "Echo: Break please"
    chat.reload()
    chat.wait_replies_shown()
    assert chat.messages() == shown


def test_outcomes_panel_shows_what_the_earlier_steps_found(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    phrase = f"night-shift nurses {uuid.uuid4().hex[:6]}"
    overview = f"/sessions/{session}"

    # A new session: the server answers 404, the panel is empty and shows no error.
    with chat.response_to("GET", overview) as first:
        chat.open(session, "empathize")
    assert first.value.status == 404
    chat.wait_outcomes_loaded()
    assert "What we found so far" in chat.outcomes_text()
    assert chat.says_no_outcomes()
    assert not chat.outcomes_failed()
    authorization = first.value.request.all_headers().get("authorization", "")
    assert authorization.startswith("Bearer "), "the overview GET carries no ID token"

    chat.send(f"We interviewed {phrase} about handovers at 7 am")
    assert chat.wait_for_reply() == "ready"

    # In Define the panel shows what Empathize found, once the server has summarised it.
    chat.go_to_step("define")
    shown = chat.outcome_text("empathize", containing=phrase, timeout=25_000)
    assert [(o["step"], o["heading"].lower()) for o in chat.outcomes()] == [
        ("empathize", "empathize")
    ]
    status, body = stack.get(overview, authorization)
    assert status == 200, body
    assert [s["stepId"] for s in body["steps"]] == ["empathize"], body
    assert shown.strip() == body["steps"][0]["summary"].strip()

    # A later step sees it too; the current step's own outcome is never in the panel.
    chat.go_to_step("ideate")
    chat.wait_empty()
    assert phrase in chat.outcome_text("empathize")
    assert [o["step"] for o in chat.outcomes()] == ["empathize"]

    # Back in Empathize: the panel has just fetched the session, outcome and all, and shows
    # nothing of Empathize itself.
    with chat.response_to("GET", overview) as again:
        chat.go_to_step("empathize")
    assert again.value.status == 200
    fetched = again.value.json()["steps"]
    assert phrase in fetched[0]["summary"]
    chat.wait_outcomes_of("empathize")
    chat.wait_replies_shown()
    assert chat.outcomes() == []
    assert chat.says_no_outcomes()
    assert phrase not in chat.outcomes_text()


def test_delete_session_asks_first_then_starts_a_new_one(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    chat.open(session, "define")
    chat.send(f"Our point of view {uuid.uuid4().hex[:6]}")
    assert chat.wait_for_reply() == "ready"
    authorization = chat.reload()
    chat.wait_replies_shown()
    history = f"/sessions/{session}/steps/define/messages"
    assert stack.get(history, authorization)[0] == 200
    deletes: list[str] = []
    chat.page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)

    # Asked first; cancelled, nothing is sent and the session stays on the page.
    dialogs = chat.delete_session(confirm=False)
    assert len(dialogs) == 1, "no confirmation was asked"
    assert dialogs[0][0] == "confirm"
    assert session in dialogs[0][1]
    chat.page.wait_for_timeout(300)  # lets a DELETE the page might still send reach the listener
    assert not deletes
    assert chat.find("delete-session").inner_text() == "Delete session"
    assert not chat.find("delete-result").count()
    assert chat.place()[0] == session
    assert [m["role"] for m in chat.messages()] == ["user", "assistant"]

    # Confirmed: DELETE with the ID token, then a fresh session.
    with chat.response_to("DELETE", f"/sessions/{session}") as deleted:
        dialogs = chat.delete_session(confirm=True)
    assert len(dialogs) == 1
    assert deleted.value.status == 200
    assert deleted.value.request.all_headers().get("authorization") == authorization
    body = deleted.value.json()
    assert body["sessionId"] == session
    # At least the session, the step, the message and its reply.
    assert body["deletedDocuments"] >= 4, body

    # The old session is gone: its history and its overview answer 404.
    assert stack.get(history, authorization)[0] == 404
    assert stack.get(f"/sessions/{session}", authorization)[0] == 404

    # The page is on a new, empty session, and says what happened.
    result = chat.notice()
    assert session in result and "Deleted" in result
    fresh = chat.wait_session_changed(session)
    assert fresh and fresh != session
    assert chat.find("session-input").input_value() == fresh
    chat.wait_empty()
    assert chat.messages() == []
    assert chat.current_step() == "define"
    chat.wait_outcomes_loaded()
    assert chat.says_no_outcomes()
    assert deletes == [f"{stack.function_url}/sessions/{session}"]
    # Still gone a moment later (the deleted reply's background summary may have landed since).
    assert stack.get(history, authorization)[0] == 404
    assert stack.get(f"/sessions/{session}", authorization)[0] == 404


def test_attached_image_reaches_the_model_and_stays_after_reload(
    chat: ChatPage, stack: Stack, tmp_path: Path
) -> None:
    session = new_session()
    wall = png_bytes(24, 16, (240, 200, 40))
    notes = f"Interview notes {uuid.uuid4().hex[:6]}: handovers at 7 am.\n".encode()
    sent = chat.function_requests()
    everything: list[str] = []
    chat.page.on("request", lambda r: everything.append(r.url))
    chat.open(session, "empathize")

    # Picked files show as previews first, each removable.
    chat.attach(
        upload("wall.png", "image/png", wall),
        upload("notes.txt", "text/plain", notes),
        upload("spare.png", "image/png", png_bytes(4, 4, (0, 0, 0))),
    )
    chat.wait_attachments_ready(3)
    assert [w["width"] for w in chat.drawn_images(TRAY_IMAGES)] == [24, 4]
    chat.find("attachment").filter(has_text="notes.txt").wait_for()
    chat.remove_attachment("spare.png")
    assert chat.attachments() == [("wall.png", True), ("notes.txt", True)]

    with chat.request_to("POST", "/"):
        chat.send("Our sticky-note wall")
    assert chat.wait_for_reply() == "ready"
    assert chat.attachments() == [], "the previews stay after sending"

    # The model got both files whole, in their order.
    expected = (
        "Echo: Our sticky-note wall "
        f"{seen_by_model('image/png', wall)} {seen_by_model('text/plain', notes)}"
    )
    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == expected
    # Only the last message goes to the function, with its files as data: URLs.
    body = json.loads([r for r in sent if r.method == "POST"][-1].post_data)
    assert "messages" not in body and body["message"]["role"] == "user"
    files = [part for part in body["message"]["parts"] if part["type"] == "file"]
    assert [(f["filename"], f["mediaType"]) for f in files] == [
        ("wall.png", "image/png"),
        ("notes.txt", "text/plain"),
    ]
    assert all(f["url"].startswith(f"data:{f['mediaType']};base64,") for f in files)

    # Just sent: the image is drawn from its data: URL, the text file is a chip.
    assert chat.drawn_images(USER_IMAGES) == [{"scheme": "data", "width": 24}]
    assert chat.sent_file_chip().inner_text().endswith("notes.txt")

    # After a reload the stored image comes from the function's file route, fetched with the
    # ID token and shown from a blob: URL.
    first_file = re.compile(rf"/sessions/{session}/steps/empathize/files/.+/0")
    with chat.response_to("GET", first_file) as image_call:
        authorization = chat.reload()
    assert image_call.value.status == 200
    assert image_call.value.request.all_headers().get("authorization") == authorization
    assert chat.drawn_images(USER_IMAGES) == [{"scheme": "blob", "width": 24}]
    assert chat.messages() == shown

    # The text file downloads through the same authenticated fetch, bytes unchanged.
    with chat.page.expect_download() as download:
        chat.sent_file_chip().click()
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


def test_a_pasted_image_is_sent_without_text(chat: ChatPage) -> None:
    sketch = png_bytes(10, 12, (30, 120, 220))
    chat.open(new_session(), "prototype")

    # Cells copied from a spreadsheet come with a picture of them: the text is what was meant.
    pasted = chat.paste_file("image.png", "image/png", sketch, text="Persona\tNeed")
    assert not pasted, "the text paste goes ahead"
    assert chat.attachments() == []

    assert chat.paste_file("image.png", "image/png", sketch)
    chat.wait_attachments_ready(1)
    assert chat.drawn_images(TRAY_IMAGES) == [{"scheme": "data", "width": 10}]
    assert chat.draft() == ""

    # A photo of the wall may go alone.
    chat.send()
    assert chat.wait_for_reply() == "ready"
    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[0]["text"] == ""
    reply = shown[1]["text"]
    assert reply.startswith("Echo:") and reply.endswith(seen_by_model("image/png", sketch)), reply
    assert chat.drawn_images(USER_IMAGES) == [{"scheme": "data", "width": 10}]

    chat.reload()
    chat.wait_replies_shown()
    assert chat.messages() == shown
    assert chat.drawn_images(USER_IMAGES) == [{"scheme": "blob", "width": 10}]


def test_files_the_function_would_refuse_are_not_sent(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    sent = chat.function_requests()
    chat.open(session, "define")

    # A type the function does not take, and a file over 5 MiB: refused here, with a reason.
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
    chat.attach(upload("drawing.svg", "image/svg+xml", svg))
    problem = chat.attach_problem()
    assert "drawing.svg" in problem and "cannot be attached" in problem
    chat.attach(upload("huge.png", "image/png", b"\x89PNG" + bytes(5 * 1024 * 1024)))
    chat.attach_problem('"huge.png" is too large')
    assert chat.attachments() == []
    assert not chat.can_send()
    chat.press_enter()
    chat.page.wait_for_timeout(300)  # lets a POST the page might still send reach the listener
    assert not [r.url for r in sent if r.method == "POST"]
    assert chat.messages() == []

    # The function has the last word: a "PNG" that is not one passes here and is refused there,
    # with its JSON error shown, and nothing is stored.
    chat.attach(upload("fake.png", "image/png", b"this is not a picture"))
    chat.wait_attachments_ready(1)
    assert not chat.find("attach-error").count()
    with chat.response_to("POST", "/") as answer:
        chat.send("Is this our prototype?")
    assert answer.value.status == 400
    assert answer.value.json()["error"]["code"] == "file_content_mismatch"
    assert chat.wait_for_reply() == "error"
    assert "(file_content_mismatch)" in chat.error_text()
    assert not chat.can_retry(), "it would only be refused again"
    # The refused message goes back into the composer, text and file, to be fixed.
    chat.wait_draft("Is this our prototype?")
    assert chat.messages() == []
    assert chat.attachments() == [("fake.png", True)]
    assert chat.can_send()
    authorization = chat.reload()
    chat.wait_empty()
    assert stack.get(f"/sessions/{session}/steps/define/messages", authorization)[0] == 404


def test_reasoning_and_sources_show_live_and_after_reload(chat: ChatPage, stack: Stack) -> None:
    session = new_session()
    chat.open(session, "empathize")
    chat.send("What do we know about night shifts? [[standin chunks=10 delay_ms=400]]")

    # While the reply is written the thinking is open above it...
    chat.wait_thinking_live()
    assert chat.find("reasoning").locator("summary").inner_text() == "Thinking…"
    assert chat.wait_for_reply() == "ready"

    def check_reply() -> None:
        reply = chat.last_reply()
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
    authorization = chat.reload()
    chat.wait_replies_shown()
    check_reply()
    reply = stack.stored(session, "empathize", authorization)[1]
    assert [p["type"] for p in reply["parts"]] == ["reasoning", "text", "source-url", "source-url"]
    assert reply["parts"][0]["text"] == THOUGHT_SUMMARY


def test_app_check_token_goes_with_every_call_to_the_function(chat: ChatPage, stack: Stack) -> None:
    """The App Check build sends X-Firebase-AppCheck on every route the page calls.

    No network here: the SDK's debug token exchange is answered by the test, and the reCAPTCHA
    Enterprise script that the provider loads on start (unused with a debug token) is refused.
    """
    page = chat.page
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
    sent = chat.function_requests()
    session = new_session()
    step = f"/sessions/{session}/steps/ideate"
    chat.open(session, "ideate", demo_url=stack.app_check_demo_url)

    # A message with an image, reloaded mid-reply (history, overview, stream, file), then
    # stopped, then the whole session deleted: every route the page knows.
    chat.attach(upload("wall.png", "image/png", png_bytes(8, 8, (200, 60, 60))))
    chat.wait_attachments_ready(1)
    chat.send("Ideas please [[standin words=120 chunks=60 delay_ms=250]]")
    chat.wait_reply_longer_than(20)
    with chat.response_to("GET", f"{step}/stream") as resumed:
        chat.reload()
    assert resumed.value.status == 200
    chat.page.locator(USER_IMAGES).wait_for()
    assert chat.stop().status == 200
    assert chat.wait_for_reply() == "ready"
    with chat.response_to("DELETE", f"/sessions/{session}") as deleted:
        chat.delete_session(confirm=True)
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


def test_the_page_fits_a_phone(chat: ChatPage) -> None:
    """At 390 px wide nothing runs off the screen, and every control can be reached and used:
    the session row, the steps, a reply with its thinking and sources, the composer, an error
    with its buttons and the delete notice."""
    chat.page.set_viewport_size(PHONE)
    session = new_session()
    chat.open(session, "define")
    assert chat.unreachable() == []

    # A reply with thinking and sources, after a message with an image and a long link.
    chat.attach(upload("wall.png", "image/png", png_bytes(300, 40, (90, 160, 90))))
    chat.wait_attachments_ready(1)
    assert chat.unreachable() == []
    link = "https://example.com/" + "very-long-path-" * 8
    chat.send(f"Our wall, and the survey at {link}")
    assert chat.wait_for_reply() == "ready"
    chat.last_reply().get_by_test_id("reasoning").locator("summary").click()
    assert chat.drawn_images(USER_IMAGES) == [{"scheme": "data", "width": 300}]
    assert chat.unreachable() == []

    # An error, with Retry and Dismiss beside it.
    chat.send("Break please [[standin status=503]]")
    assert chat.wait_for_reply() == "error"
    assert chat.can_retry()
    assert chat.unreachable() == []
    chat.find("error").get_by_role("button", name="Dismiss").click()

    # The session row works: another step, New, Open, and Delete with its notice.
    chat.go_to_step("prototype")
    chat.wait_empty()
    assert chat.unreachable() == []
    chat.find("session-new").click()
    chat.wait_session_changed(session)
    chat.find("session-input").fill(session)
    chat.find("session-open").click()
    chat.wait_outcomes_loaded()
    assert chat.place() == (session, "prototype")
    with chat.response_to("DELETE", f"/sessions/{session}") as deleted:
        chat.delete_session(confirm=True)
    assert deleted.value.status == 200
    assert "Deleted" in chat.notice()
    assert chat.unreachable() == []


def test_someone_elses_session_is_said_to_be_so(chat: ChatPage, stack: Stack) -> None:
    """Another user's session opens empty (the function answers 404, as for a session nobody
    started), and the page says it may be someone else's. A message to it is refused (404
    not_found): the page says plainly that the session is not ours or does not exist, offers
    no Retry, and takes the message to a new session of our own."""
    theirs = new_session()
    other = stack.another_user()
    stack.send_as(other, theirs, "define", "Our secret point of view")

    with chat.response_to("GET", f"/sessions/{theirs}/steps/define/messages") as history:
        chat.open(theirs, "define")
    assert history.value.status == 404
    hint = chat.wait_empty()
    assert theirs in hint and "only whoever started a session can open it" in hint, hint
    chat.wait_outcomes_loaded()
    assert chat.says_no_outcomes() and not chat.outcomes_failed()
    assert "secret" not in chat.page.inner_text("body")

    with chat.response_to("POST", "/") as answer:
        chat.send("Can we join in?")
    assert answer.value.status == 404
    assert answer.value.json()["error"]["code"] == "not_found"
    assert chat.wait_for_reply() == "error"
    said = chat.session_missing()
    assert f"Session {theirs} is not yours, or it does not exist." in said, said
    assert not chat.can_retry() and not chat.has_error()
    # Nothing was stored: the message waits in the box, and only a new session can take it.
    chat.wait_draft("Can we join in?")
    assert chat.messages() == []
    assert not chat.can_send()

    chat.start_new_session()
    mine = chat.wait_session_changed(theirs)
    # A session the page made up itself is plainly new: no hint about other people's.
    assert chat.wait_empty() == "No messages in define yet. Say hello."
    assert chat.current_step() == "define"
    assert chat.draft() == "Can we join in?"
    assert not chat.find("session-missing").count()
    chat.send()
    assert chat.wait_for_reply() == "ready"
    assert [m["text"] for m in chat.messages()] == ["Can we join in?", "Echo: Can we join in?"]
    # Sent, it is no draft any more: not in another step, nor back in this one.
    chat.go_to_step("ideate")
    chat.wait_empty()
    assert chat.draft() == ""
    chat.go_to_step("define")
    chat.wait_replies_shown()
    assert chat.draft() == ""
    authorization = chat.reload()
    assert [text_of(m) for m in stack.stored(mine, "define", authorization)] == [
        "Can we join in?",
        "Echo: Can we join in?",
    ]
    # Theirs is as it was, and still not ours.
    assert [text_of(m) for m in stack.stored(theirs, "define", other)] == [
        "Our secret point of view",
        "Echo: Our secret point of view",
    ]
    assert stack.get(f"/sessions/{theirs}", authorization)[0] == 404


def test_screenshot_of_a_conversation(chat: ChatPage, stack: Stack, tmp_path: Path) -> None:
    """A tidy conversation for docs/screenshot.png, beside the board and what the two steps
    before it found (also checks two turns in one step, and outcomes from two steps)."""
    chat.open(f"team-blue-{uuid.uuid4().hex[:4]}", "empathize")
    try:  # the facilitator puts each of the first two steps' findings on the board
        configure(stack.standin_url, tool="add_board_items", kind="insight")
        chat.send("Most first-year students eat lunch alone in week one.")
        assert chat.wait_for_reply() == "ready"
        chat.go_to_step("define")
        configure(stack.standin_url, tool="add_board_items", kind="hmw")
        chat.send("How might we help first-year students find a study group?")
        assert chat.wait_for_reply() == "ready"
    finally:
        configure(stack.standin_url)
    chat.wait_board_count(2)

    chat.go_to_step("ideate")
    chat.wait_empty()
    for text in (
        "Give me three wild ideas for the first week of term.",
        "Which of them could we try out on Monday?",
    ):
        chat.send(text)
        assert chat.wait_for_reply() == "ready"
    chat.type("Let's sketch the study-buddy lottery.")
    shown = chat.messages()
    assert [m["role"] for m in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[3]["text"] == "Echo: Which of them could we try out on Monday?"
    # The stand-in's outcome of a step: one point per message of the team.
    assert chat.outcome_text("empathize", "lunch alone") == (
        "Findings:\n- Most first-year students eat lunch alone in week one."
    )
    assert chat.outcome_text("define", "study group") == (
        "Findings:\n- How might we help first-year students find a study group?"
    )
    assert [o["step"] for o in chat.outcomes()] == ["empathize", "define"]

    # The committed screenshot is rewritten only on request, so a test run leaves git clean.
    target = SCREENSHOT
    if SCREENSHOT.exists() and not os.environ.get("UPDATE_SCREENSHOT"):
        target = tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    chat.page.set_viewport_size({"width": 860, "height": 660})
    chat.page.screenshot(path=str(target))


# --- The workshop board ----------------------------------------------------------------------


def test_the_facilitator_adds_to_the_board_and_the_team_edits_it(chat: ChatPage) -> None:
    chat.open(new_session(), "empathize")
    chat.send("Nurses hate pagers [[standin tool=add_board_items]]")
    assert chat.wait_for_reply() == "ready"
    assert chat.tool_cards() == [
        {"tool": "add_board_items", "state": "output-available", "subject": "Nurses hate pagers"}
    ]
    chat.wait_board_count(1)
    (item,) = chat.board_items()
    assert (item["kind"], item["title"]) == ("insight", "Nurses hate pagers")

    chat.find("board-item-edit").click()
    chat.find("board-item-title-input").fill("Pagers are hated at night")
    chat.find("board-item-save").click()
    chat.page.wait_for_function(
        "() => document.querySelector('[data-testid=board-item-title]')?.textContent"
        " === 'Pagers are hated at night'"
    )
    # Stored: a reload shows the edited item, and the tool card with the reply.
    chat.reload()
    chat.wait_board_count(1)
    assert chat.board_items() == [{**item, "title": "Pagers are hated at night"}]
    assert [c["state"] for c in chat.tool_cards()] == ["output-available"]


def test_a_removal_waits_for_the_teams_approve_or_deny(chat: ChatPage) -> None:
    chat.open(new_session(), "define")
    chat.send("Night shifts are lonely [[standin tool=add_board_items]]")
    assert chat.wait_for_reply() == "ready"
    chat.wait_board_count(1)
    (item,) = chat.board_items()

    chat.send(f"Drop it [[standin tool=remove_board_item item={item['id']}]]")
    chat.find("deny").wait_for()
    assert chat.wait_for_reply() == "ready"
    chat.find("deny").click()  # the answer goes by itself, and the same reply carries on
    chat.find("tool-answer").wait_for()
    assert chat.wait_for_reply() == "ready"
    chat.wait_reply_text(
        'Echo: Drop it | remove_board_item -> {"denied": "the team did not approve it"}'
    )
    assert chat.tool_cards()[-1]["state"] == "output-denied"
    assert chat.board_items() == [item]

    chat.send(f"Drop it now [[standin tool=remove_board_item item={item['id']}]]")
    chat.find("approve").wait_for()
    assert chat.wait_for_reply() == "ready"
    chat.find("approve").click()
    chat.wait_board_count(0)
    assert chat.tool_cards()[-1]["state"] == "output-available"
    assert [m["role"] for m in chat.messages()] == ["user", "assistant"] * 3


# --- A team -----------------------------------------------------------------------------------


def test_a_teammate_joins_by_link_and_both_see_the_conversation_live(
    chat: ChatPage, teammate: ChatPage
) -> None:
    chat.open(new_session(), "empathize")
    chat.send("Nurses hate pagers")
    assert chat.wait_for_reply() == "ready"
    chat.find("share").click()
    link = chat.find("share-link").input_value()
    assert "invite=" in link

    # Another browser profile: another anonymous user, who joins with the link.
    teammate.page.goto(link)
    teammate.wait_loaded()
    assert "joined" in teammate.notice() and "as member" in teammate.notice()
    teammate.wait_reply_text("Echo: Nurses hate pagers")
    assert "invite=" not in teammate.page.url  # the code is not left in the address bar

    teammate.send("What about night shifts?")
    assert teammate.wait_for_reply() == "ready"
    # The owner's page shows the teammate's message and its reply without a reload.
    chat.wait_reply_text("Echo: What about night shifts?")
    assert [m["role"] for m in chat.messages()] == ["user", "assistant"] * 2
    assert chat.messages() == teammate.messages()


def test_a_message_sent_while_a_teammates_reply_is_written_waits_its_turn(
    chat: ChatPage, teammate: ChatPage
) -> None:
    chat.open(new_session(), "empathize")
    chat.send("Hello")
    assert chat.wait_for_reply() == "ready"
    chat.find("share").click()
    teammate.page.goto(chat.find("share-link").input_value())
    teammate.wait_loaded()
    teammate.wait_reply_text("Echo: Hello")

    chat.send("Tell us about pagers [[standin chunks=40 delay_ms=100]]")
    chat.page.wait_for_function(
        "s => [...document.querySelectorAll(s)].some(e => e.textContent.startsWith('Echo: Tell'))",
        arg=ASSISTANT_TEXTS,
    )
    teammate.send("And night shifts?")
    # Its message is stored and shown at once, marked as waiting for its turn, while the
    # owner's reply grows on the teammate's page too.
    teammate.find("waiting").wait_for()
    assert "waits for its turn" in teammate.find("waiting").inner_text()
    teammate.page.wait_for_function(
        "s => [...document.querySelectorAll(s)].some(e => e.textContent.startsWith('Echo: Tell'))",
        arg=ASSISTANT_TEXTS,
    )
    assert teammate.wait_for_reply() == "ready"
    assert chat.wait_for_reply() == "ready"
    texts = [m["text"] for m in teammate.messages()]
    assert texts[-4] == "Tell us about pagers [[standin chunks=40 delay_ms=100]]"
    assert texts[-3].startswith("Echo: Tell us about pagers")
    assert texts[-2] == "And night shifts?"
    assert texts[-1].startswith("Echo: ") and texts[-1].endswith("And night shifts?")
    # The owner's page shows the teammate's turn, after its own, without a reload.
    chat.page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=message]').length === n", arg=len(texts)
    )
    assert chat.messages() == teammate.messages()
