"""ID tokens as the Firebase Auth emulator issues them, for the tests and the benchmark.

A function pointed at the emulator (FIREBASE_AUTH_EMULATOR_HOST) accepts them unsigned, as
firebase-admin does for emulator tokens; no deployed function accepts them.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from . import PROJECT


def unsigned_token(uid: str = "alice", audience: str = PROJECT, **claims: Any) -> str:
    """`alg: none`, no signature; `claims` adds to or replaces the payload's."""

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{audience}",
        "aud": audience,
        "sub": uid,
        "user_id": uid,
        "auth_time": now,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
