"""Who is calling: a Firebase ID token, verified locally against cached Google certificates.

The function never calls Firebase Auth's admin APIs, so it needs no credentials of its own:
verifying a token only needs the project id and the public certificates.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..chat.errors import Forbidden, Unauthenticated, Unavailable
from ..chat.team import MAX_NAME_CHARS

log = logging.getLogger("workshop_chat.web.auth")

LOCAL_UID = "local-user"
# The uid names the caller's `rateLimits/{uid}` document, so it must be a valid document id.
# Firebase's own uids always are; only a hand-made custom token (or an unsigned emulator
# token) could carry `/`, `.`, `..` or `__x__`.
_RESERVED_ID = re.compile(r"__.*__|\.|\.\.", re.DOTALL)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: their uid, and their name as the token gives it ("" when none)."""

    uid: str
    name: str = ""


class Verifier(Protocol):
    def caller(self, authorization: str | None) -> Caller: ...


class AppCheck:
    """Firebase App Check: keeps scripts that are not the team's frontend off a paid model.

    `enforce` refuses a request without a valid `X-Firebase-AppCheck` token (401, its own
    codes); `monitor` logs what enforce would refuse and lets it through; `off` checks nothing.
    Tokens are verified locally by firebase-admin against App Check's public keys (cached).
    """

    def __init__(self, project: str, mode: str) -> None:
        self.mode = mode
        self.app = _firebase_app(project) if mode != "off" else None

    def check(self, token: str | None) -> None:
        if self.app is None:
            return
        problem = self._problem(token)
        if problem is None:
            return
        if self.mode == "monitor":
            log.warning("App Check would refuse this request", extra={"fields": {"code": problem}})
            return
        message = "send a valid X-Firebase-AppCheck token"
        raise Unauthenticated(problem, message)

    def _problem(self, token: str | None) -> str | None:
        from firebase_admin import app_check

        token = (token or "").strip()
        if not token:
            return "app_check_missing"
        if len(token) > 8192:
            return "app_check_invalid"
        try:
            app_check.verify_token(token, app=self.app)
        except Exception as exc:  # noqa: BLE001 - bad tokens, unreachable keys: all refused
            log.info("App Check token refused", extra={"fields": {"error": type(exc).__name__}})
            return "app_check_invalid"
        return None


def _firebase_app(project: str) -> Any:
    """One firebase-admin app per project, without credentials: verifying needs none."""
    import firebase_admin
    from firebase_admin import credentials
    from google.auth.credentials import AnonymousCredentials

    class _NoCredentials(credentials.Base):  # type: ignore[misc]  # firebase-admin is untyped
        def get_credential(self) -> Any:
            return AnonymousCredentials()  # type: ignore[no-untyped-call]

    name = f"workshop-chat-{project}"
    try:
        return firebase_admin.get_app(name)
    except ValueError:
        return firebase_admin.initialize_app(
            _NoCredentials(), options={"projectId": project}, name=name
        )


class NoAuth:
    """AUTH_MODE=none: every caller is the same local user. For experiments only."""

    def caller(self, authorization: str | None) -> Caller:
        return Caller(LOCAL_UID)


class FirebaseAuth:
    """Verifies `Authorization: Bearer <ID token>` with firebase-admin for one project."""

    def __init__(self, project: str, anonymous: bool = True) -> None:
        self.anonymous = anonymous
        if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
            # firebase-admin then skips the signature check: fine on a laptop, never elsewhere.
            log.warning(
                "FIREBASE_AUTH_EMULATOR_HOST is set: unsigned ID tokens are accepted. "
                "Local development only."
            )
        self.app = _firebase_app(project)

    def caller(self, authorization: str | None) -> Caller:
        from firebase_admin import auth

        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 8192:
            raise Unauthenticated(
                "unauthenticated", "send Authorization: Bearer <Firebase ID token>"
            )
        try:
            claims = auth.verify_id_token(token, app=self.app)
        except auth.CertificateFetchError as exc:
            log.error("could not fetch token certificates", extra={"fields": {}})
            raise Unavailable("auth_unavailable", "sign-in cannot be checked right now") from exc
        except auth.ExpiredIdTokenError as exc:
            raise Unauthenticated("token_expired", "the ID token has expired; refresh it") from exc
        except (ValueError, auth.InvalidIdTokenError) as exc:
            raise Unauthenticated("invalid_token", "the ID token is not valid") from exc
        except Exception as exc:  # noqa: BLE001 - a token that crashes the verifier is invalid
            log.warning("ID token check failed", extra={"fields": {"error": type(exc).__name__}})
            raise Unauthenticated("invalid_token", "the ID token is not valid") from None
        uid = claims.get("uid") or claims.get("sub")
        if not isinstance(uid, str) or not usable_uid(uid):
            raise Unauthenticated("invalid_token", "the ID token has no usable user id")
        provider = (claims.get("firebase") or {}).get("sign_in_provider")
        if provider == "anonymous" and not self.anonymous:
            raise Forbidden("anonymous_not_allowed", "sign in with an account to chat")
        name = claims.get("name")
        return Caller(uid, name.strip()[:MAX_NAME_CHARS] if isinstance(name, str) else "")


def usable_uid(uid: str) -> bool:
    """Non-empty, at most 128 characters (Firebase's limit), and a valid Firestore document id."""
    if not 0 < len(uid) <= 128 or "/" in uid or _RESERVED_ID.fullmatch(uid):
        return False
    try:
        uid.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
