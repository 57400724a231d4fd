"""HTTP: routes, CORS, request limits; requests become domain calls, domain errors JSON.

Nothing here touches Firestore or Gemini. A chat response is held back until the reply's first
text (or its failure) is known, so that a reply that never started gets an honest HTTP status
instead of a 200 stream that only carries an error.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

from flask import Request, Response

from ..chat import domain
from ..chat.domain import (
    BadRequest,
    ChatError,
    Event,
    Failed,
    Finished,
    KeepAlive,
    MethodNotAllowed,
    NotFound,
    ReasoningDelta,
    Source,
    TextDelta,
    TooLarge,
    UnsupportedMedia,
)
from ..chat.sessions import SessionOps
from ..chat.turns import Chat
from ..config import Config
from . import protocol
from .auth import AppCheck, Verifier
from .logs import trace_from_headers

log = logging.getLogger("workshop_chat.web.app")

# /sessions/<sessionId>/steps/<stepId>/files/<messageId>/<n>: a stored file (GET).
_FILE_ROUTE = re.compile(r"/sessions/([^/]+)/steps/([^/]+)/files/([^/]+)/([0-9]{1,4})")
# /sessions/<sessionId>/steps/<stepId>/<what>: messages (GET), stream (GET), stop (POST).
_STEP_ROUTE = re.compile(r"/sessions/([^/]+)/steps/([^/]+)/(messages|stream|stop)/?")
_STEP_METHODS = {"messages": "GET", "stream": "GET", "stop": "POST"}
_OLD_RESUME = re.compile(r"/[^/]+/stream/?")
# /sessions/<sessionId>: the workshop's overview (GET) or its deletion (DELETE).
_SESSION_ROUTE = re.compile(r"/sessions/([^/]+)/?")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


# Every domain error's HTTP status: the one mapping, for every route.
STATUS: dict[type[ChatError], int] = {
    domain.BadRequest: 400,
    domain.Unauthorized: 401,
    domain.NotFound: 404,
    domain.MethodNotAllowed: 405,
    domain.Conflict: 409,
    domain.TooLarge: 413,
    domain.UnsupportedMedia: 415,
    domain.RateLimited: 429,
    domain.UpstreamFailed: 502,
    domain.Unavailable: 503,
}

# A reply that failed before its first text, by cause: an honest status, not a 200 stream.
_BEFORE_TEXT: dict[str, tuple[type[ChatError], str]] = {
    "model_unavailable": (domain.Unavailable, "model_unavailable"),
    "storage": (domain.Unavailable, "storage_unavailable"),
    "replaced": (domain.Conflict, "replaced"),
    "model_error": (domain.UpstreamFailed, "model_error"),
}


def error_response(error: ChatError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    status = STATUS.get(type(error), 400)
    return json_response(status, protocol.error_body(error.code, error.message), headers)


def failure_error(failed: Failed) -> ChatError:
    kind, code = _BEFORE_TEXT.get(failed.cause, _BEFORE_TEXT["model_error"])
    return kind(code, failed.error_text, failed.retry_after)


class Api:
    """The function's request handler; everything it uses is handed in."""

    def __init__(
        self,
        config: Config,
        chat: Chat,
        ops: SessionOps,
        verifier: Verifier,
        app_check: AppCheck,
    ) -> None:
        self.config = config
        self.chat = chat
        self.ops = ops
        self.verifier = verifier
        self.app_check = app_check

    def __call__(self, request: Request) -> Response:
        response = self._route(request)
        self._cors(request, response)
        return response

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        try:
            if request.method == "OPTIONS":
                return Response(status=204)
            if path == "/healthz":
                return json_response(200, {"status": "ok"})
            # Before the ID token and the body: a script that is not the app gets nothing.
            self.app_check.check(request.headers.get("X-Firebase-AppCheck"))
            if path in ("/", "/api/chat"):
                self._only(request, "POST")
                return self._post_chat(request)
            match = _SESSION_ROUTE.fullmatch(request.path)
            if match:
                if request.method not in ("GET", "DELETE"):
                    raise MethodNotAllowed("method_not_allowed", "use GET or DELETE")
                return self._session_route(request, match.group(1))
            match = _FILE_ROUTE.fullmatch(request.path)
            if match:
                self._only(request, "GET")
                return self._file(request, *match.groups())
            match = _STEP_ROUTE.fullmatch(request.path)
            if match:
                session_id, step_id, what = match.groups()
                self._only(request, _STEP_METHODS[what])
                return self._step_route(request, session_id, step_id, what)
            if _OLD_RESUME.fullmatch(request.path) and request.method == "GET":
                # useChat's default reconnect URL carries no session or step: nothing to find.
                return Response(status=204)
            raise NotFound("not_found", "no such route")
        except ChatError as error:
            return error_response(error)
        except domain.StoreUnavailable:
            return error_response(domain.Unavailable("storage_unavailable", "try again"))
        except Exception:
            log.error("request failed unexpectedly", exc_info=True)
            return json_response(500, protocol.error_body("internal", "something went wrong"))

    def _only(self, request: Request, method: str) -> None:
        if request.method != method:
            raise MethodNotAllowed("method_not_allowed", f"use {method}")

    # Routes ---------------------------------------------------------------------------

    def _post_chat(self, request: Request) -> Response:
        uid = self.verifier.uid(request.headers.get("Authorization"))
        cfg = self.config
        body, size = self._json_body(request, cfg.max_request_bytes_with_files)
        # A request may be larger than a text-only one only by the file parts it carries.
        limit = cfg.max_request_bytes + protocol.file_part_bytes(body)
        if size > limit:
            raise TooLarge("body_too_large", f"the body may be at most {limit} bytes")
        turn = protocol.parse_turn(
            body,
            max_id_chars=cfg.max_id_chars,
            max_message_chars=cfg.max_message_chars,
            max_parts=cfg.max_parts,
            file_limits=cfg.file_limits,
        )
        text_mode = request.args.get("protocol", "data") == "text"
        trace = trace_from_headers(request.headers, cfg.project)
        events = self.chat.run(turn, uid, trace)
        head, rest = _first_text(events)
        failed = head[-1] if head and isinstance(head[-1], Failed) else None
        if failed is not None and not any(isinstance(e, _CONTENT) for e in head):
            return error_response(failure_error(failed))
        stream = _chain(head, rest)
        if text_mode:
            return Response(protocol.encode_text_stream(stream), 200, protocol.TEXT_STREAM_HEADERS)
        return Response(protocol.encode_ui_stream(stream), 200, protocol.UI_STREAM_HEADERS)

    def _file(self, request: Request, session_id: str, step_id: str, mid: str, n: str) -> Response:
        """The bytes with their type, private to the owner: no sniffing, no shared caches, and
        shown inline only when it is an image."""
        uid = self.verifier.uid(request.headers.get("Authorization"))
        for value, name in ((session_id, "sessionId"), (step_id, "stepId"), (mid, "messageId")):
            protocol.check_id(value, name, self.config.max_id_chars)
        data, ref = self.ops.file(session_id, step_id, mid, int(n), uid)
        disposition = "inline" if ref.media_type.startswith("image/") else "attachment"
        quoted = urllib.parse.quote(ref.filename, safe="")
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=3600",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
        }
        return Response(data, 200, headers, mimetype=ref.media_type)

    def _session_route(self, request: Request, session_id: str) -> Response:
        uid = self.verifier.uid(request.headers.get("Authorization"))
        protocol.check_id(session_id, "sessionId", self.config.max_id_chars)
        if request.method == "DELETE":
            deleted = self.ops.delete(session_id, uid)
            return json_response(200, {"sessionId": session_id, "deletedDocuments": deleted})
        steps = self.ops.overview(session_id, uid)
        return json_response(200, protocol.overview(session_id, steps))

    def _step_route(self, request: Request, session_id: str, step_id: str, what: str) -> Response:
        uid = self.verifier.uid(request.headers.get("Authorization"))
        protocol.check_id(session_id, "sessionId", self.config.max_id_chars)
        protocol.check_id(step_id, "stepId", self.config.max_id_chars)
        if what == "stop":
            stopped = self.ops.stop(session_id, step_id, uid)
            return json_response(200, {"stopped": stopped})
        if what == "stream":
            events = self.ops.resume(session_id, step_id, uid)
            if events is None:
                return Response(status=204)
            head, rest = _first_text(events)
            return Response(
                protocol.encode_ui_stream(_chain(head, rest)), 200, protocol.UI_STREAM_HEADERS
            )
        messages = self.ops.history(session_id, step_id, uid)
        base = _public_base(request)

        def file_url(message_id: str, n: int) -> str:
            return f"{base}/sessions/{session_id}/steps/{step_id}/files/{message_id}/{n}"

        body = {"messages": [protocol.ui_message(m, file_url) for m in messages]}
        return json_response(200, body)

    def _json_body(self, request: Request, limit: int) -> tuple[Any, int]:
        if request.mimetype != "application/json":
            raise UnsupportedMedia("unsupported_media_type", "send Content-Type: application/json")
        too_large = TooLarge("body_too_large", f"the body may be at most {limit} bytes")
        # Not `request.max_content_length`: functions-framework drains the body after every
        # non-streamed response with get_data(), which would then raise again and turn this
        # 413 into a 500. Reading at most limit + 1 bytes bounds chunked bodies as well.
        if (request.content_length or 0) > limit:
            raise too_large
        raw = _read_at_most(request.stream, limit + 1)
        if len(raw) > limit:
            raise too_large
        try:
            return json.loads(raw, parse_constant=_reject_constant), len(raw)
        except (ValueError, RecursionError):
            raise BadRequest("invalid_json", "the body is not valid JSON") from None

    # CORS -----------------------------------------------------------------------------

    def _cors(self, request: Request, response: Response) -> None:
        origin = request.headers.get("Origin")
        allowed = self.config.allowed_origins
        if not origin or not (origin in allowed or "*" in allowed):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = (
            "x-vercel-ai-ui-message-stream, Retry-After"
        )
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, X-Firebase-AppCheck"
            )
            response.headers["Access-Control-Max-Age"] = "3600"


_ALLOWED_HEADERS = "Authorization, Content-Type, X-Firebase-AppCheck"
# What a client is shown: once any of it is out, a failure can only be an in-stream error.
_CONTENT = (TextDelta, ReasoningDelta, Source)


def _read_at_most(stream: Any, size: int) -> bytes:
    """Read until the end of the body or `size` bytes, whichever comes first."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = stream.read(min(left, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _public_base(request: Request) -> str:
    """This function's URL as the browser sees it. Cloud Run ends TLS in front of the
    container, so the scheme comes from X-Forwarded-Proto; a forged one only changes the
    caller's own links."""
    scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if scheme not in ("http", "https"):
        scheme = request.scheme
    return f"{scheme}://{request.host}{request.script_root}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_text(events: Iterator[Event]) -> tuple[list[Event], Iterator[Event]]:
    """Read up to the first text or the end; keep-alives before that carry nothing."""
    head: list[Event] = []
    for event in events:
        if isinstance(event, KeepAlive):
            continue
        head.append(event)
        if isinstance(event, (*_CONTENT, Finished, Failed)):
            break
    return head, events


def _chain(head: list[Event], rest: Iterator[Event]) -> Iterator[Event]:
    yield from head
    yield from rest
