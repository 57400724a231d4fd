"""Errors, in two flat families: what the chat decides (a `ChatError`, which a caller may be
told: a code and a safe message) and what an adapter reports (an `AdapterError`: the store,
the model or the bucket could not do it). `web/errors.py` gives each class its HTTP status, in
one table; nothing else translates one into another.
"""

from __future__ import annotations


class ChatError(Exception):
    """A refusal the caller may read: `code` for programs, `message` for people."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InvalidRequest(ChatError):
    """The request is malformed or breaks a limit on what may be sent."""


class Unauthenticated(ChatError):
    """No caller, or one whose credentials do not hold."""


class Forbidden(ChatError):
    """The caller is known, but this kind of account may not do it."""


class NotFound(ChatError):
    """No such session, message, file or route for this caller: someone else's session is as
    missing as one that never was."""


class MethodNotAllowed(ChatError):
    """The route is there, the method is not."""


class Conflict(ChatError):
    """The request contradicts what is stored (an id in use, a reply replaced)."""


class TooLarge(ChatError):
    """The request is bigger than it may be."""


class UnsupportedMedia(ChatError):
    """The body, or a file in it, is of a type that is not taken."""


class RateLimited(ChatError):
    """The caller sent too much too fast; `retry_after` says when to come back."""


class UpstreamFailed(ChatError):
    """The model refused or failed before any of the reply was shown."""


class Unavailable(ChatError):
    """Something the turn needs is busy or down right now; trying again may work."""


class AdapterError(Exception):
    """An adapter could not do what it was asked. Its text never reaches a caller."""


class StoreUnavailable(AdapterError):
    """Firestore (or the bucket) could not be reached, or refused the write."""


class ModelUnavailable(AdapterError):
    """Gemini refused before the first byte, after our retries (429/5xx)."""

    def __init__(self, retry_after: int | None = None) -> None:
        super().__init__("model unavailable")
        self.retry_after = retry_after


class ModelFailed(AdapterError):
    """Gemini failed after the stream began, or answered something we cannot use."""
