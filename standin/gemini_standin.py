"""Offline stand-in for the Gemini REST API, good enough for the real google-genai client.

Tests, end-to-end runs and load benchmarks need a model that answers deterministically, can be
told to misbehave (quota errors, cut streams, safety blocks, stalls) and costs no quota. The
stand-in speaks the wire format google-genai 3.x expects, so the product under test runs unchanged
with ``GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:PORT`` and any ``GEMINI_API_KEY``.

Run ``python standin/gemini_standin.py [--host 127.0.0.1] [--port 0]``; it prints one line
``READY http://HOST:PORT`` once listening and exits on SIGTERM/SIGINT.

The reply to the last user message "text" is ``Echo: text``, split into ``chunks`` SSE events;
each file the message carries adds ``[type, N bytes, sha256 <12 hex>]`` (inline) or ``[type at
gs://...]`` (Vertex AI's file data), so a test sees that the model got the bytes whole.
Knobs come from ``POST /_standin/config`` defaults, overridden by a ``[[standin key=value ...]]``
directive in the last user message, so that browser tests can trigger faults through the product:

- shape: ``chunks=3``, ``words=N`` (append `` w1 .. wN``), ``finish=MAX_TOKENS`` (final reason)
- timing: ``first_delay_ms``, ``delay_ms`` (between events), ``stall_ms`` (after the first event)
- tools: ``tool=add_board_items`` (or another declared function) answers with one function
  call whose arguments come from the message (``kind=``, ``item=`` for an id; ``kind=bad``
  makes them invalid), ``rounds=N`` calls before the text; the text then lists the function
  responses it got. A call handed back without its thought signature is refused, as Gemini 3
  refuses it.
- faults: ``status=429|500|503`` (+ ``retry_after=S``), ``cut_after=K`` (K events, then hang up),
  ``block=prompt|reply`` (safety), ``times=N`` (faults only for the first N such requests),
  ``whole_status=500`` (only non-streamed ``:generateContent`` calls fail)

A streamed answer's recording notes how it ended: ``"ended": "complete"`` or
``"client-closed"`` (the caller closed the connection first, noticed even during a silence).

Control API: ``POST /_standin/config`` {knobs}, ``POST /_standin/fail_next``
{"statuses": [429, 500], "retry_after": 1}, ``GET /_standin/requests`` (recording, secrets
masked), ``DELETE /_standin/requests`` (full reset), ``GET /_standin/health``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import re
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Knobs = dict[str, int | str]

# Inclusive bounds: anything outside is a typo in a test, better refused than silently ignored.
INT_KNOBS: dict[str, tuple[int, int]] = {
    "chunks": (1, 1_000_000),
    "words": (0, 10_000_000),
    "delay_ms": (0, 3_600_000),
    "first_delay_ms": (0, 3_600_000),
    "stall_ms": (0, 3_600_000),
    "status": (400, 599),
    "whole_status": (400, 599),  # only non-streamed calls fail (the function's summaries)
    "retry_after": (0, 86_400),
    "times": (1, 1_000_000_000),
    "cut_after": (0, 1_000_000_000),
    "rounds": (1, 50),  # with `tool`: function calls before the answer
}
TEXT_KNOBS: dict[str, re.Pattern[str]] = {
    "block": re.compile(r"prompt|reply"),
    "finish": re.compile(r"[A-Z][A-Z_]{0,39}"),
    "tool": re.compile(r"[a-z_]{1,64}"),
    "kind": re.compile(r"[a-z]{1,20}"),
    "item": re.compile(r"[A-Za-z0-9_-]{1,64}"),
}
# With ``times=N`` only these stop after N requests; timing and shape knobs keep applying, so a
# retried request still looks like the first one apart from the fault.
FAULT_KNOBS = ("status", "whole_status", "cut_after", "block", "finish", "stall_ms")
DEFAULT_CHUNKS = 3
# Gemini refuses a request whose inline data pass 20 MB (decoded here, as a safe reading).
MAX_INLINE_BYTES = 20 * 1024 * 1024
MAX_RECORDED = 10_000  # a long benchmark must not grow the recording without bound

# What a thinking model's thought summary looks like, in two chunks before the answer.
THOUGHTS = ("**Reading the request**\n\n", "The team wants an echo, so I will echo it.")
# Grounding as Gemini sends it: redirect links with the site's domain as the title; the first
# source twice, as real answers often cite one page from several places.
GROUNDING = {
    "webSearchQueries": ["design thinking workshop"],
    "groundingChunks": [
        {
            "web": {
                "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-a",
                "title": "example.com",
            }
        },
        {
            "web": {
                "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-b",
                "title": "example.org",
            }
        },
        {
            "web": {
                "uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/standin-a",
                "title": "example.com",
            }
        },
    ],
}
DIRECTIVE = re.compile(r"\[\[standin\b(.*?)\]\]", re.DOTALL)
MODEL_PATH = re.compile(
    r"/(?:v1|v1beta|v1beta1)/"
    r"(?P<vertex>projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?"
    r"models/(?P<model>[^/:]+):(?P<method>streamGenerateContent|generateContent)"
)
SECRET_HEADERS = ("x-goog-api-key", "authorization")

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
STATUS_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]


class KnobError(ValueError):
    """A knob that is unknown or out of range: reported as a 400 so typos surface at once."""


def parse_knobs(raw: dict[str, Any]) -> Knobs:
    """Validate knobs from a directive (strings) or the control API (JSON values)."""
    knobs: Knobs = {}
    for key, value in raw.items():
        if key in INT_KNOBS:
            low, high = INT_KNOBS[key]
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise KnobError(f"standin knob {key}={value!r} is not an integer") from None
            if isinstance(value, bool) or not low <= number <= high:
                raise KnobError(f"standin knob {key}={value!r} is outside {low}..{high}")
            knobs[key] = number
        elif key in TEXT_KNOBS:
            if not isinstance(value, str) or not TEXT_KNOBS[key].fullmatch(value):
                raise KnobError(f"standin knob {key}={value!r} is not allowed")
            knobs[key] = value
        else:
            raise KnobError(f"unknown standin knob {key!r}")
    return knobs


def strip_directives(text: str) -> tuple[str, Knobs]:
    """Take ``[[standin k=v ...]]`` out of a message: the echo must not show test plumbing."""
    raw: dict[str, str] = {}
    for match in DIRECTIVE.finditer(text):
        for token in match.group(1).split():
            key, sep, value = token.partition("=")
            if not sep:
                raise KnobError(f"standin directive token {token!r} is not key=value")
            raw[key] = value
    return DIRECTIVE.sub("", text).strip(), parse_knobs(raw)


def split_evenly(text: str, parts: int) -> list[str]:
    """Cut text into at most ``parts`` non-empty pieces whose lengths differ by at most one."""
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def gemini_error(code: int, message: str, retry_after: int | None = None) -> web.Response:
    """Answer in Gemini's error shape, which google-genai turns into ClientError/ServerError."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": STATUS_NAMES.get(code, "UNKNOWN"),
    }
    headers = {}
    if retry_after is not None:
        # Gemini itself states the delay in a RetryInfo detail; the header is for simple clients.
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        ]
        headers["Retry-After"] = str(retry_after)
    return web.json_response({"error": error}, status=code, headers=headers)


def text_of(content: dict[str, Any]) -> str:
    """Join a content's text parts, as a reader of ``response.text`` would."""
    return "".join(part.get("text", "") for part in content["parts"] if isinstance(part, dict))


NOTES = re.compile(r"<workshop-(notes|board)>.*?</workshop-\1>\s*", re.S)


def without_notes(text: str) -> str:
    """The team's words without the workshop's notes and board blocks: context the function
    puts ahead of a step's first turn, which the echo leaves out so that replies stay
    predictable."""
    return NOTES.sub("", text)


def contents_problem(body: Any, vertex: bool = False) -> str | None:
    """Return Gemini's complaint about a malformed request, or None when it is acceptable."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    inline = 0
    for i, content in enumerate(contents):
        where = f"GenerateContentRequest.contents[{i}]"
        if not isinstance(content, dict):
            return f"Invalid JSON payload received. {where} is not an object."
        if content.get("role", "user") not in ("user", "model", ""):
            return "Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* {where}.parts: contents.parts must not be empty.\n"
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or not part or part.get("text") == "":
                return (
                    f"* {where}.parts[{j}]: contents.parts must not be empty: "
                    "required oneof field 'data' must have one initialized field\n"
                )
            try:
                found = file_of(part, f"{where}.parts[{j}]", vertex)
            except FileProblem as problem:
                return str(problem)
            inline += len(found.get("data", b"")) if found else 0
    if inline > MAX_INLINE_BYTES:
        return f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes."
    return None


def declared(body: dict[str, Any]) -> set[str]:
    """The function names the request declares."""
    names = set()
    for tool in body.get("tools") or []:
        found = tool.get("functionDeclarations", tool.get("function_declarations")) or []
        names |= {f.get("name") for f in found if isinstance(f, dict)}
    return names


def function_responses(turn: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The function responses the turn's contents give back, in order."""
    found = []
    for content in turn:
        for part in content.get("parts") or []:
            response = part.get("functionResponse", part.get("function_response"))
            if isinstance(response, dict):
                found.append((str(response.get("name")), response.get("response")))
    return found


def unsigned_call(turn: list[dict[str, Any]]) -> str | None:
    """Gemini 3 refuses a function call of the current turn handed back without its thought
    signature; the stand-in does the same, so that a client that drops it is caught."""
    for content in turn:
        for part in content.get("parts") or []:
            if "functionCall" in part and not part.get("thoughtSignature"):
                return "Function call is missing a thought_signature in functionCall parts."
    return None


def function_call(name: str, text: str, knobs: Knobs, n: int) -> dict[str, Any]:
    """One call with arguments made from the message: `kind=bad` makes them invalid."""
    kind = str(knobs.get("kind", "insight"))
    item = str(knobs.get("item", ""))
    title = (text or "a finding")[:80]
    if name == "add_board_items":
        args: dict[str, Any] = {"items": [{"kind": kind, "title": title, "detail": text}]}
    elif name == "update_board_item":
        args = {"id": item, "title": title}
    else:
        args = {"id": item}
    signature = base64.b64encode(f"standin-signature-{n}".encode()).decode()
    return {"functionCall": {"name": name, "args": args}, "thoughtSignature": signature}


class FileProblem(ValueError):
    """Gemini's complaint about a file part."""


def file_of(part: dict[str, Any], where: str, vertex: bool) -> dict[str, Any] | None:
    """A part's file: its type, and its decoded bytes or its object's URI; None when the part
    is no file. Inline bytes must be base64 with a type, and a `fileData` part on Vertex AI
    names a Cloud Storage object (Gemini reads snake_case and lowerCamel names alike)."""
    inline = part.get("inlineData", part.get("inline_data"))
    if inline is not None:
        mime = inline.get("mimeType", inline.get("mime_type")) if isinstance(inline, dict) else None
        if not mime:
            raise FileProblem(f"* {where}.inline_data.mime_type: required field is not set\n")
        try:
            data = base64.b64decode(inline.get("data") or "", validate=True)
        except (ValueError, TypeError):
            field = f"'{where}.inline_data.data' (TYPE_BYTES)"
            raise FileProblem(f"Invalid value at {field}, Base64 decoding failed") from None
        return {"mimeType": mime, "data": data}
    linked = part.get("fileData", part.get("file_data"))
    if linked is not None:
        uri = linked.get("fileUri", linked.get("file_uri")) if isinstance(linked, dict) else None
        if not uri or (vertex and not str(uri).startswith("gs://")):
            raise FileProblem(
                f"* {where}.file_data.file_uri: a Cloud Storage URI (gs://) is required\n"
            )
        return {"mimeType": linked.get("mimeType", linked.get("mime_type")), "uri": uri}
    return None


def step_record(prompt: str) -> str | None:
    """A readable stand-in summary of a step: the previous summary's points, then one point
    per team turn of the new transcript (one JSON object a line), newest last, at most 12.

    None when `prompt` is not such a transcript (then the stand-in echoes, as for any call).
    """
    points: list[str] = []
    found = False
    for line in prompt.splitlines():
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("summary"), str):
            points += [p for p in item["summary"].splitlines() if p.startswith("- ")]
            found = True
        elif isinstance(item, dict) and item.get("from") in ("team", "facilitator"):
            found = True
            if item["from"] == "team" and isinstance(item.get("text"), str):
                text = " ".join(item["text"].split())
                points.append(f"- {text[:80]}")
    if not found:
        return None
    return "Findings:\n" + "\n".join(points[-12:])


def describe(content: dict[str, Any] | None, vertex: bool) -> str:
    """What the echo says it saw of a content's files, so a test can tell the model got each
    file whole."""
    seen = []
    for part in content["parts"] if content else ():
        f = file_of(part, "", vertex)
        if f is None:
            continue
        if "data" in f:
            digest = hashlib.sha256(f["data"]).hexdigest()[:12]
            seen.append(f"[{f['mimeType']}, {len(f['data'])} bytes, sha256 {digest}]")
        else:
            seen.append(f"[{f['mimeType']} at {f['uri']}]")
    return "".join(" " + s for s in seen)


def usage(prompt_chars: int, reply_chars: int | None) -> dict[str, int]:
    """Rough token counts (4 characters a token), enough for accounting code to have numbers."""
    prompt = prompt_chars // 4 + 1
    if reply_chars is None:
        return {"promptTokenCount": prompt, "totalTokenCount": prompt}
    reply = reply_chars // 4 + 1
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": reply,
        "totalTokenCount": prompt + reply,
    }


@dataclass
class Reply:
    """What one model request should produce, decided before the first byte is sent."""

    model: str
    response_id: str
    prompt_chars: int
    text: str
    knobs: Knobs
    # As Gemini does, only when the request asks: thought summaries first (thinkingConfig
    # includeThoughts), grounding sources on the last chunk (the google_search tool).
    thoughts: bool = False
    grounding: bool = False
    # A function call to make instead of text (the ``tool`` directive).
    call: dict[str, Any] | None = None

    def _envelope(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "modelVersion": self.model, "responseId": self.response_id}

    @staticmethod
    def _candidate(text: str | None, finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if text is not None:
            candidate["content"] = {"role": "model", "parts": [{"text": text}]}
        if finish is not None:
            candidate["finishReason"] = finish
        if finish == "SAFETY":
            candidate["safetyRatings"] = SAFETY_RATINGS
        candidate["index"] = 0
        return candidate

    def events(self) -> Iterator[dict[str, Any]]:
        """The SSE events of a streamed reply; only the last one says how the reply ended.

        A generator, so a long reply holds no encoded events in memory and the first event
        leaves without waiting for the others to be built.
        """
        block = self.knobs.get("block")
        if block == "prompt":
            yield self._prompt_blocked()
            return
        if self.call is not None:
            content = {"role": "model", "parts": [self.call]}
            final = {"content": content, "finishReason": "STOP", "index": 0}
            yield self._envelope(candidates=[final], usageMetadata=self._usage([]))
            return
        chunks = split_evenly(self.text, int(self.knobs.get("chunks", DEFAULT_CHUNKS)))
        if block == "reply":
            chunks = chunks[: max(1, len(chunks) - 1)]
        if self.thoughts:
            for thought in THOUGHTS:
                part = {"text": thought, "thought": True}
                content = {"role": "model", "parts": [part]}
                yield self._envelope(candidates=[{"content": content, "index": 0}])
        for chunk in chunks[:-1]:
            yield self._envelope(candidates=[self._candidate(chunk)])
        if block == "reply":
            yield self._envelope(candidates=[self._candidate(chunks[-1])])
            final = self._candidate(None, "SAFETY")
        else:
            final = self._candidate(chunks[-1], str(self.knobs.get("finish", "STOP")))
        if self.grounding:
            final["groundingMetadata"] = GROUNDING
        yield self._envelope(candidates=[final], usageMetadata=self._usage(chunks))

    def whole(self) -> dict[str, Any]:
        """The single response of ``:generateContent``."""
        block = self.knobs.get("block")
        if block == "prompt":
            return self._prompt_blocked()
        if block == "reply":
            final = self._candidate(None, "SAFETY")
            return self._envelope(candidates=[final], usageMetadata=self._usage([]))
        last = self._candidate(self.text, str(self.knobs.get("finish", "STOP")))
        return self._envelope(candidates=[last], usageMetadata=self._usage([self.text]))

    def _prompt_blocked(self) -> dict[str, Any]:
        feedback = {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS}
        return self._envelope(promptFeedback=feedback, usageMetadata=usage(self.prompt_chars, None))

    def _usage(self, sent: list[str]) -> dict[str, int]:
        counts = usage(self.prompt_chars, sum(map(len, sent)))
        if self.thoughts:
            counts["thoughtsTokenCount"] = sum(len(t) for t in THOUGHTS) // 4
        return counts


@dataclass
class State:
    """Everything a test can set or inspect; one instance per server, reset as a whole."""

    config: Knobs = field(default_factory=dict)
    fail_queue: deque[tuple[int, int | None]] = field(default_factory=deque)
    times_seen: dict[str, int] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECORDED))
    replies: int = 0

    def reset(self) -> None:
        self.config.clear()
        self.fail_queue.clear()
        self.times_seen.clear()
        self.requests.clear()
        self.replies = 0


STATE = web.AppKey("state", State)


def record(state: State, request: web.Request, body: Any) -> dict[str, Any]:
    """Keep what arrived so tests can assert on the exact wire request, minus secrets.

    A streamed answer also notes how it ended: `"ended": "complete"`, or `"client-closed"`
    when the caller closed the connection first (a stopped or cancelled generation).
    """
    headers = {k: ("***" if k.lower() in SECRET_HEADERS else v) for k, v in request.headers.items()}
    query = {k: ("***" if k == "key" else v) for k, v in request.query.items()}
    entry = {
        "at": time.monotonic(),  # arrival, on the clock every local process shares (benchmark)
        "method": request.method,
        "path": request.path,
        "query": query,
        "body": body,
        "headers": headers,
    }
    state.requests.append(entry)
    return entry


def effective_knobs(state: State, directive: Knobs) -> Knobs:
    """Merge defaults and directive, then drop the faults once ``times`` is used up."""
    knobs = {**state.config, **directive}
    times = knobs.get("times")
    if times is None:
        return knobs
    key = json.dumps(sorted(knobs.items()))
    seen = state.times_seen[key] = state.times_seen.get(key, 0) + 1
    if seen > int(times):
        knobs = {k: v for k, v in knobs.items() if k not in FAULT_KNOBS}
    return knobs


async def sleep_ms(ms: int | str | None) -> None:
    if ms:
        await asyncio.sleep(int(ms) / 1000)


async def handle_model(request: web.Request) -> web.StreamResponse:
    """Answer generateContent/streamGenerateContent the way Gemini would, or fail on request."""
    state = request.app[STATE]
    raw = await request.read()
    try:
        body: Any = json.loads(raw)
        is_json = True
    except ValueError:
        body, is_json = raw.decode("utf-8", "replace"), False
    entry = record(state, request, body)
    route = MODEL_PATH.fullmatch(request.path)
    if route is None:
        return gemini_error(404, f"Requested entity was not found: {request.path}")
    if not (
        request.headers.get("x-goog-api-key")
        or request.query.get("key")
        or request.headers.get("authorization")
    ):
        return gemini_error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity)."
            " Please use API Key or other form of API consumer identity to call this API.",
        )
    if not is_json:
        return gemini_error(400, "Invalid JSON payload received.")
    vertex = route["vertex"] is not None
    problem = contents_problem(body, vertex)
    if problem:
        return gemini_error(400, problem)

    contents = body["contents"]
    users = [
        c for c in contents if c.get("role", "user") in ("user", "") and not function_responses([c])
    ]
    try:
        text, directive = strip_directives(without_notes(text_of(users[-1])) if users else "")
    except KnobError as exc:
        return gemini_error(400, str(exc))
    knobs = effective_knobs(state, directive)
    turn = contents[contents.index(users[-1]) + 1 :] if users else []
    problem = unsigned_call(turn)
    if problem:
        return gemini_error(400, problem)
    answered = function_responses(turn)

    if state.fail_queue:
        code, retry_after = state.fail_queue.popleft()
        return gemini_error(code, STATUS_MESSAGES.get(code, "Injected failure."), retry_after)
    if "status" in knobs:
        code = int(knobs["status"])
        retry_after = knobs.get("retry_after")
        message = STATUS_MESSAGES.get(code, "Injected failure.")
        return gemini_error(code, message, None if retry_after is None else int(retry_after))

    filler = "".join(f" w{i}" for i in range(1, int(knobs.get("words", 0)) + 1))
    if answered:
        filler += " | " + "; ".join(f"{name} -> {json.dumps(r)}" for name, r in answered)
    state.replies += 1
    # Gemini reads proto JSON, which accepts lowerCamel and snake_case field names alike
    # (google-genai sends some of each).
    generation = body.get("generationConfig") or {}
    thinking = generation.get("thinkingConfig") or generation.get("thinking_config") or {}
    include_thoughts = thinking.get("includeThoughts", thinking.get("include_thoughts"))
    tools = body.get("tools") or []
    reply = Reply(
        model=route["model"],
        response_id=f"standin-{state.replies:06d}",
        prompt_chars=sum(len(text_of(c)) for c in contents),
        text=f"Echo: {text}{filler}{describe(users[-1] if users else None, vertex)}",
        knobs=knobs,
        thoughts=include_thoughts is True,
        grounding=any(
            isinstance(t, dict) and ("googleSearch" in t or "google_search" in t) for t in tools
        ),
    )
    name = str(knobs.get("tool", ""))
    if name and name in declared(body) and len(answered) < int(knobs.get("rounds", 1)):
        reply.call = function_call(name, text, knobs, state.replies)
    if route["method"] == "generateContent":
        outcome = step_record(text)
        if outcome is not None:
            reply.text = outcome
        if "whole_status" in knobs:  # refuse only the non-streamed calls (summaries)
            code = int(knobs["whole_status"])
            return gemini_error(code, STATUS_MESSAGES.get(code, "Injected failure."))
        return await answer_whole(request, reply)
    return await answer_stream(request, reply, entry)


async def answer_whole(request: web.Request, reply: Reply) -> web.StreamResponse:
    knobs = reply.knobs
    await sleep_ms(int(knobs.get("first_delay_ms", 0)) + int(knobs.get("stall_ms", 0)))
    if "cut_after" in knobs:
        # Hang up before any response: the client sees a disconnect instead of a status.
        return cut(request)
    return web.json_response(reply.whole())


async def answer_stream(
    request: web.Request, reply: Reply, entry: dict[str, Any]
) -> web.StreamResponse:
    """Write SSE events as Gemini does: ``data: <one-line JSON>`` then a blank line, CRLF."""
    knobs = reply.knobs
    events: Iterator[dict[str, Any]] = reply.events()
    cut_after = knobs.get("cut_after")
    if cut_after is not None:
        events = itertools.islice(events, int(cut_after))
    delay, stall = int(knobs.get("delay_ms", 0)), int(knobs.get("stall_ms", 0))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    try:
        # The status line goes out with the first event, so a slow first token delays it too.
        await sleep_ms(knobs.get("first_delay_ms"))
        await response.prepare(request)
        for index, event in enumerate(events):
            if index:
                await sleep_ms(delay + (stall if index == 1 else 0))
            payload = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
            await response.write(b"data: " + payload.encode() + b"\r\n\r\n")
        if cut_after is not None:
            return cut(request, response)
        await response.write_eof()
        entry["ended"] = "complete"
    except ConnectionResetError:
        entry["ended"] = "client-closed"  # the client went away; nothing left to tell it
    except asyncio.CancelledError:
        entry["ended"] = "client-closed"  # noticed even mid-silence: handler_cancellation
        raise
    return response


def cut(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Drop the connection without ending the chunked body: the client must see a broken stream.

    ``close`` (not ``abort``) so that the chunks already written still reach the client first.
    """
    if request.transport is not None:
        request.transport.close()
    return response if response is not None else web.Response()


async def control_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "GET":
        return web.json_response({"config": state.config})
    try:
        knobs = parse_knobs(await request.json())
    except (ValueError, AttributeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state.config = knobs
    return web.json_response({"config": knobs})


async def control_fail_next(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        spec = await request.json()
        retry_after = spec.get("retry_after")
        faults = [parse_knobs({"status": code}) for code in spec["statuses"]]
        if retry_after is not None:
            parse_knobs({"retry_after": retry_after})
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        return web.json_response({"error": f"bad fail_next request: {exc}"}, status=400)
    for fault in faults:
        state.fail_queue.append((int(fault["status"]), retry_after))
    return web.json_response({"queued": [code for code, _ in state.fail_queue]})


async def control_requests(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":
        state.reset()
        return web.json_response({"reset": True})
    return web.json_response({"requests": list(state.requests)})


async def control_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    """Control routes first; every other POST is treated as a model call, so that an unexpected
    URL from a new SDK version is recorded and answered 404 rather than silently missed."""
    app = web.Application(client_max_size=32 * 1024**2)
    app[STATE] = State()
    app.router.add_get("/_standin/health", control_health)
    app.router.add_route("*", "/_standin/config", control_config)
    app.router.add_post("/_standin/fail_next", control_fail_next)
    app.router.add_route("*", "/_standin/requests", control_requests)
    app.router.add_post("/{tail:.*}", handle_model)
    return app


def raise_fd_limit() -> None:
    """A thousand open streams need more sockets than the usual soft limit of 1024."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
        if wanted > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No access log: at a thousand streams it would cost more than the streams themselves.
    # handler_cancellation: a caller that closes the connection cancels its handler at once,
    # so a stream stopped while the stand-in is silent is recorded as closed right away.
    runner = web.AppRunner(
        make_app(), access_log=None, shutdown_timeout=0.25, handler_cancellation=True
    )
    await runner.setup()
    # A deep backlog so a burst of a thousand connects is not answered with SYN retries.
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"  # an IPv6 literal needs brackets in a URL
    print(f"READY http://{bound_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
