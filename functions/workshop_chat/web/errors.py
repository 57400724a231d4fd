"""Every error's HTTP status, in one table: the core's refusals, the adapters' failures, and the
routing's own. No other module translates one error into another."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from ..chat.domain import Failed
from ..chat.errors import (
    AdapterError,
    ChatError,
    Conflict,
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    ModelFailed,
    ModelUnavailable,
    NotFound,
    RateLimited,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMedia,
    UpstreamFailed,
)

STATUS: dict[type[ChatError], int] = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMedia: 415,
    Forbidden: 403,
    RateLimited: 429,
    UpstreamFailed: 502,
    Unavailable: 503,
}

# An adapter's failure as the caller reads it: never the adapter's own words.
ADAPTER: dict[type[AdapterError], ChatError] = {
    StoreUnavailable: Unavailable("storage_unavailable", "storage is unavailable; try again"),
    ModelUnavailable: Unavailable("model_unavailable", "the model is busy; try again"),
    ModelFailed: UpstreamFailed("model_error", "the model failed; try again"),
}

# A reply that failed before its first text, by cause: an honest status, not a 200 stream.
BEFORE_TEXT: dict[str, tuple[type[ChatError], str]] = {
    "model_unavailable": (Unavailable, "model_unavailable"),
    "storage": (Unavailable, "storage_unavailable"),
    "replaced": (Conflict, "replaced"),
    "model_error": (UpstreamFailed, "model_error"),
}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def as_chat_error(error: ChatError | AdapterError) -> ChatError:
    if isinstance(error, ChatError):
        return error
    return ADAPTER.get(type(error), ADAPTER[StoreUnavailable])


def error_status(error: ChatError) -> int:
    return STATUS.get(type(error), 400)


def error_response(error: ChatError | AdapterError) -> Response:
    refusal = as_chat_error(error)
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    status = error_status(refusal)
    return json_response(status, error_body(refusal.code, refusal.message), headers)


def failure_error(failed: Failed) -> ChatError:
    kind, code = BEFORE_TEXT.get(failed.cause, BEFORE_TEXT["model_error"])
    return kind(code, failed.error_text, failed.retry_after)


def internal_error() -> Response:
    return json_response(500, error_body("internal", "something went wrong"))
