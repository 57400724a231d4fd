"""The HTTP edge: routes, CORS, request limits; requests become core calls, errors become
statuses (`errors.py`).

Nothing here touches Firestore or Gemini. A chat response is held back until the reply's first
text (or its failure) is known, so that a reply that never started gets an honest HTTP status
instead of a 200 stream that only carries an error.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from flask import Request, Response
from werkzeug.exceptions import MethodNotAllowed as NoSuchMethod
from werkzeug.exceptions import NotFound as NoSuchRoute
from werkzeug.routing import Map, RequestRedirect, Rule

from ..chat.board import check_change, check_item_id
from ..chat.domain import (
    Event,
    Failed,
    Finished,
    KeepAlive,
    ReasoningDelta,
    Source,
    TextDelta,
    Waiting,
    iso_time,
)
from ..chat.errors import (
    AdapterError,
    ChatError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    TooLarge,
    UnsupportedMedia,
)
from ..chat.sessions import Sessions
from ..chat.team import check_code, check_name, check_role
from ..chat.turns import Turns
from ..config import Config
from . import protocol, stream
from .admission import Admission
from .auth import AppCheck, Verifier
from .errors import error_response, error_status, failure_error, internal_error, json_response
from .logs import trace_from_headers

log = logging.getLogger("workshop_chat.web.app")

_ROUTES = Map(
    [
        Rule("/healthz", endpoint="health"),
        # The caller's own Gemini tokens today, against their daily quota.
        Rule("/usage", endpoint="usage", methods=["GET"]),
        # One chat turn; `/api/chat` is where the predecessor's frontend posts.
        Rule("/", endpoint="chat", methods=["POST"]),
        Rule("/api/chat", endpoint="chat", methods=["POST"]),
        # The workshop's overview, or its deletion.
        Rule("/sessions/<session_id>", endpoint="session", methods=["GET", "DELETE"]),
        Rule(
            "/sessions/<session_id>/steps/<step_id>/messages", endpoint="history", methods=["GET"]
        ),
        Rule("/sessions/<session_id>/steps/<step_id>/stream", endpoint="resume", methods=["GET"]),
        Rule("/sessions/<session_id>/steps/<step_id>/stop", endpoint="stop", methods=["POST"]),
        Rule(
            "/sessions/<session_id>/steps/<step_id>/files/<message_id>/<int(max=9999):n>",
            endpoint="file",
            methods=["GET"],
        ),
        # The workshop board: read it, change or remove an item.
        Rule("/sessions/<session_id>/board", endpoint="board", methods=["GET"]),
        Rule(
            "/sessions/<session_id>/board/<item_id>",
            endpoint="board_item",
            methods=["PATCH", "DELETE"],
        ),
        # The team: invites (the owner's), joining with a code, leaving or removing.
        Rule("/sessions/<session_id>/invites", endpoint="invites", methods=["POST"]),
        Rule("/sessions/<session_id>/invites/<code>", endpoint="invite", methods=["DELETE"]),
        Rule("/sessions/<session_id>/members", endpoint="members", methods=["POST"]),
        Rule("/sessions/<session_id>/members/<member_uid>", endpoint="member", methods=["DELETE"]),
        # useChat's default reconnect URL carries no session or step: nothing to resume.
        Rule("/<chat_id>/stream", endpoint="no_resume", methods=["GET"]),
    ],
    strict_slashes=False,
    merge_slashes=False,  # an empty segment is no route, not a redirect to one
)


class Api:
    """The function's request handler; everything it uses is handed in."""

    def __init__(
        self,
        config: Config,
        turns: Turns,
        sessions: Sessions,
        verifier: Verifier,
        app_check: AppCheck,
    ) -> None:
        self.config = config
        self.turns = turns
        self.sessions = sessions
        self.verifier = verifier
        self.app_check = app_check
        self.telemetry = turns.telemetry
        self.admission = Admission(
            config.max_inflight_bytes,
            config.max_request_bytes_with_files,
            config.rate_limit_per_minute,
        )
        self._endpoints: dict[str, Callable[..., Response]] = {
            "chat": self._chat,
            "session": self._session,
            "history": self._history,
            "resume": self._resume,
            "stop": self._stop,
            "file": self._file,
            "usage": self._usage,
            "board": self._board,
            "board_item": self._board_item,
            "invites": self._invites,
            "invite": self._invite,
            "members": self._members,
            "member": self._member,
        }

    def __call__(self, request: Request) -> Response:
        served = self.telemetry.serve(request.method, request.headers)
        request.environ[_TRACE_KEY] = served.trace_id
        with served:
            response = self._route(request)
        route = request.environ.get(_ROUTE_KEY)
        # The span ends with the body: a stream's, seconds after this returns.
        response.call_on_close(lambda: served.finish(response.status_code, route))
        _cors(request, response, self.config.allowed_origins)
        if not response.is_streamed:
            # functions-framework reads whatever body is left after a response that is not
            # streamed, into memory: a refused 16 MiB body would be read after all. Nothing
            # reads it: gunicorn skips what is left in small pieces, or, for a refusal, the
            # connection closes.
            request._cached_data = b""
            if response.status_code >= 400 and request.content_length != 0:
                response.headers["Connection"] = "close"
        return response

    def _route(self, request: Request) -> Response:
        try:
            if request.method == "OPTIONS":
                return Response(status=204)
            endpoint, args = self._match(request)
            if endpoint == "health":
                return json_response(200, {"status": "ok"})
            # Before the ID token and the body: a script that is not the app gets nothing.
            self.app_check.check(request.headers.get("X-Firebase-AppCheck"))
            if endpoint is None:
                raise NotFound("not_found", "no such route")
            if endpoint == "no_resume":
                return Response(status=204)
            for name in ("session_id", "step_id", "message_id"):
                if name in args:
                    protocol.check_id(args[name], _ID_NAMES[name], self.config.max_id_chars)
            caller = self.verifier.caller(request.headers.get("Authorization"))
            if endpoint == "chat":  # a user message keeps its author's name
                args["name"] = caller.name
            return self._endpoints[endpoint](request, caller.uid, **args)
        except (ChatError, AdapterError) as error:
            return error_response(error)
        except Exception:
            log.error("request failed unexpectedly", exc_info=True)
            return internal_error()

    def _match(self, request: Request) -> tuple[str | None, dict[str, Any]]:
        """The route's endpoint and arguments; None for no route (answered after App Check)."""
        adapter = _ROUTES.bind("", path_info=request.path)
        try:
            rule, args = adapter.match(request.path, method=request.method, return_rule=True)
            endpoint = rule.endpoint
            request.environ[_ROUTE_KEY] = rule.rule
        except NoSuchMethod as exc:
            allowed = sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"})
            raise MethodNotAllowed("method_not_allowed", f"use {' or '.join(allowed)}") from None
        except (NoSuchRoute, RequestRedirect):
            return None, {}
        return str(endpoint), dict(args)

    # Routes ---------------------------------------------------------------------------

    def _chat(self, request: Request, uid: str, name: str = "") -> Response:
        cfg = self.config
        most = cfg.max_request_bytes_with_files
        # A body without a length may be as large as any: it is held at that.
        size = min(request.content_length or most, most)
        try:
            with self.admission.admit(uid, size):
                events = self._turn(request, uid, name)
        except ChatError as error:
            self._refused(uid, error)
            raise
        text_mode = request.args.get("protocol", "data") == "text"
        head, rest = _first_text(events)
        failed = head[-1] if head and isinstance(head[-1], Failed) else None
        if failed is not None and not any(isinstance(e, _CONTENT) for e in head):
            return error_response(failure_error(failed))
        events = _chain(head, rest)
        if text_mode:
            return Response(stream.encode_text_stream(events), 200, stream.TEXT_STREAM_HEADERS)
        return Response(stream.encode_ui_stream(events), 200, stream.UI_STREAM_HEADERS)

    def _turn(self, request: Request, uid: str, name: str) -> Iterator[Event]:
        """The body read, checked and decoded, and the turn claimed: all the work that holds
        the request's bytes in memory."""
        cfg = self.config
        body, size = _json_body(request, cfg.max_request_bytes_with_files)
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
        del body
        return self.turns.run(turn, uid, log_trace(request, cfg.project), name)

    def _file(
        self, request: Request, uid: str, session_id: str, step_id: str, message_id: str, n: int
    ) -> Response:
        """The bytes with their type, private to the owner: no sniffing, no shared caches, and
        shown inline only when it is an image."""
        data, ref = self.sessions.file(session_id, step_id, message_id, n, uid)
        disposition = "inline" if ref.media_type.startswith("image/") else "attachment"
        quoted = urllib.parse.quote(ref.filename, safe="")
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
        }
        return Response(data, 200, headers, mimetype=ref.media_type)

    def _session(self, request: Request, uid: str, session_id: str) -> Response:
        if request.method == "DELETE":
            deleted = self.sessions.delete(session_id, uid)
            return json_response(200, {"sessionId": session_id, "deletedDocuments": deleted})
        session, steps = self.sessions.overview(session_id, uid)
        return json_response(200, protocol.overview(session_id, session, steps, uid))

    def _board(self, request: Request, uid: str, session_id: str) -> Response:
        items = self.sessions.board_items(session_id, uid)
        return json_response(200, {"items": [protocol.board_item(i) for i in items]})

    def _board_item(self, request: Request, uid: str, session_id: str, item_id: str) -> Response:
        item_id = check_item_id(item_id)
        if request.method == "DELETE":
            self.sessions.remove_item(session_id, uid, item_id)
            return json_response(200, {"id": item_id, "removed": True})
        body, _ = _json_body(request, self.config.max_request_bytes)
        change = check_change(item_id, body)
        item = self.sessions.change_item(session_id, uid, change)
        return json_response(200, protocol.board_item(item))

    def _invites(self, request: Request, uid: str, session_id: str) -> Response:
        body, _ = _json_body(request, self.config.max_request_bytes)
        role = check_role(body.get("role") if isinstance(body, dict) else None)
        code, invite = self.sessions.invite(session_id, uid, role, time.time())
        made = {"code": code, "role": invite.role, "expiresAt": iso_time(invite.expires_at)}
        return json_response(201, made)

    def _invite(self, request: Request, uid: str, session_id: str, code: str) -> Response:
        self.sessions.revoke(session_id, uid, check_code(code))
        return json_response(200, {"revoked": True})

    def _members(self, request: Request, uid: str, session_id: str) -> Response:
        """Joining with a code. Wrong codes count against the caller's minute, as refused chat
        bodies do: codes cannot be tried in bulk."""
        with self.admission.admit(uid, request.content_length or 0):
            try:
                body, _ = _json_body(request, self.config.max_request_bytes)
                if not isinstance(body, dict):
                    raise InvalidRequest("invalid_body", "the body must be a JSON object")
                code, name = check_code(body.get("code")), check_name(body.get("name"))
                role = self.sessions.join(session_id, uid, code, name, time.time())
            except ChatError as error:
                self._refused(uid, error)
                raise
        return json_response(200, {"sessionId": session_id, "role": role})

    def _refused(self, uid: str, error: ChatError) -> None:
        """A refused request (a 4xx, not a limit's own: those are counted there) counts
        against the caller's minute; the one that uses it up holds them on every instance."""
        counted = error_status(error) < 500 and not isinstance(error, RateLimited)
        if counted and self.admission.refused(uid):
            self.turns.spend_minute(uid)

    def _member(self, request: Request, uid: str, session_id: str, member_uid: str) -> Response:
        member_uid = protocol.check_id(member_uid, "uid", self.config.max_id_chars)
        self.sessions.remove(session_id, uid, member_uid)
        return json_response(200, {"removed": member_uid})

    def _usage(self, request: Request, uid: str) -> Response:
        now = time.time()
        return json_response(200, protocol.usage(self.sessions.usage(uid, now), now))

    def _stop(self, request: Request, uid: str, session_id: str, step_id: str) -> Response:
        stopped = self.sessions.stop(session_id, step_id, uid)
        return json_response(200, {"stopped": stopped})

    def _resume(self, request: Request, uid: str, session_id: str, step_id: str) -> Response:
        # A follower holds a thread and polls the store: a user may hold only a few.
        slot = self.admission.follower(uid)
        try:
            events = self.sessions.resume(session_id, step_id, uid)
            if events is None:
                slot.release()
                return Response(status=204)
            head, rest = _first_text(events)
        except BaseException:
            slot.release()
            raise
        body = stream.encode_ui_stream(_released(_chain(head, rest), slot.release))
        return Response(body, 200, stream.UI_STREAM_HEADERS)

    def _history(self, request: Request, uid: str, session_id: str, step_id: str) -> Response:
        limit, before = protocol.page_of(request.args, self.config.max_id_chars)
        page = self.sessions.history(session_id, step_id, uid, limit, before)
        base = _public_base(request)

        def file_url(message_id: str, n: int) -> str:
            return f"{base}/sessions/{session_id}/steps/{step_id}/files/{message_id}/{n}"

        body = {
            "messages": [protocol.ui_message(m, file_url) for m in page.messages],
            "nextBefore": page.next_before,
        }
        return json_response(200, body)


_ID_NAMES = {"session_id": "sessionId", "step_id": "stepId", "message_id": "messageId"}
# What a client is shown: once any of it is out, a failure can only be an in-stream error.
_CONTENT = (TextDelta, ReasoningDelta, Source)


def _json_body(request: Request, limit: int) -> tuple[Any, int]:
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
        raise InvalidRequest("invalid_json", "the body is not valid JSON") from None


def _cors(request: Request, response: Response, allowed: tuple[str, ...]) -> None:
    """Headers for the browser's check, for the configured origins only: a page served from
    anywhere else may send requests, but its browser will not let it read the answers."""
    origin = request.headers.get("Origin")
    if not origin or not (origin in allowed or "*" in allowed):
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = "x-vercel-ai-ui-message-stream, Retry-After"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Firebase-AppCheck"
        )
        response.headers["Access-Control-Max-Age"] = "3600"


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


_ROUTE_KEY = "workshop_chat.route"  # the matched route's template, for the server span
_TRACE_KEY = "workshop_chat.trace"  # the trace id of the request's span, when traced


def log_trace(request: Request, project: str) -> str | None:
    """The trace log lines name: the caller's, else the one this request's span began."""
    found = trace_from_headers(request.headers, project)
    traced = request.environ.get(_TRACE_KEY)
    if found is None and traced and project:
        return f"projects/{project}/traces/{traced}"
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_text(events: Iterator[Event]) -> tuple[list[Event], Iterator[Event]]:
    """Read up to the first text, the end, or word that the reply waits its turn (the stream
    starts then, so the wait is answered 200); keep-alives before that carry nothing."""
    head: list[Event] = []
    for event in events:
        if isinstance(event, KeepAlive):
            continue
        head.append(event)
        if isinstance(event, (*_CONTENT, Finished, Failed, Waiting)):
            break
    return head, events


def _chain(head: list[Event], rest: Iterator[Event]) -> Iterator[Event]:
    yield from head
    yield from rest


def _released(events: Iterator[Event], release: Callable[[], None]) -> Iterator[Event]:
    """The events, then `release` once the stream ends or its client goes."""
    try:
        yield from events
    finally:
        release()
