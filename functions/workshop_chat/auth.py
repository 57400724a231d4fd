"""Who is calling: a Firebase ID token, verified locally against cached Google certificates.

The function never calls Firebase Auth's admin APIs, so it needs no credentials of its own:
verifying a token only needs the project id and the public certificates.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .turn import Unauthorized, Unavailable

log = logging.getLogger("workshop_chat.auth")

LOCAL_UID = "local-user"


class Verifier(Protocol):
    def uid(self, authorization: str | None) -> str: ...


class NoAuth:
    """AUTH_MODE=none: every caller is the same local user. For experiments only."""

    def uid(self, authorization: str | None) -> str:
        return LOCAL_UID


class FirebaseAuth:
    """Verifies `Authorization: Bearer <ID token>` with firebase-admin for one project."""

    def __init__(self, project: str) -> None:
        import firebase_admin
        from firebase_admin import credentials
        from google.auth.credentials import AnonymousCredentials

        class _NoCredentials(credentials.Base):
            def get_credential(self) -> Any:
                return AnonymousCredentials()

        name = f"workshop-chat-{project}"
        try:
            self.app = firebase_admin.get_app(name)
        except ValueError:
            self.app = firebase_admin.initialize_app(
                _NoCredentials(), options={"projectId": project}, name=name
            )

    def uid(self, authorization: str | None) -> str:
        from firebase_admin import auth

        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 8192:
            raise Unauthorized("unauthenticated", "send Authorization: Bearer <Firebase ID token>")
        try:
            claims = auth.verify_id_token(token, app=self.app)
        except auth.CertificateFetchError as exc:
            log.error("could not fetch token certificates", extra={"fields": {}})
            raise Unavailable("auth_unavailable", "sign-in cannot be checked right now") from exc
        except auth.ExpiredIdTokenError as exc:
            raise Unauthorized("token_expired", "the ID token has expired; refresh it") from exc
        except (ValueError, auth.InvalidIdTokenError) as exc:
            raise Unauthorized("invalid_token", "the ID token is not valid") from exc
        uid = claims.get("uid") or claims.get("sub")
        if not isinstance(uid, str) or not uid:
            raise Unauthorized("invalid_token", "the ID token has no user")
        return uid
