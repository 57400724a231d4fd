"""Firebase App Check: enforce, monitor and off; tokens verified against locally served keys."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import app_check

from tests import support
from tests.support import chat_body, sse_chunks, text_of
from tests.test_attachments import attach
from tests.test_files import PNG

PROJECT = support.PROJECT
NUMBER = "123456789012"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "app-check-kid"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


JWKS = {
    "keys": [
        {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": KID,
            "n": _b64(KEY.public_key().public_numbers().n),
            "e": _b64(KEY.public_key().public_numbers().e),
        }
    ]
}


def app_check_token(key: Any = KEY, audience: list[str] | None = None, lifetime: int = 3600) -> str:
    """An App Check token as the App Check service issues it: RS256, typ JWT, kid, aud list."""
    now = int(time.time())
    payload = {
        "iss": f"https://firebaseappcheck.googleapis.com/{NUMBER}",
        "aud": audience or [f"projects/{NUMBER}", f"projects/{PROJECT}"],
        "sub": f"1:{NUMBER}:web:0a1b2c3d",
        "iat": now - 5,
        "exp": now - 5 + lifetime,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KID, "typ": "JWT"})


class _Keys(http.server.BaseHTTPRequestHandler):
    fetched = 0

    def do_GET(self) -> None:
        _Keys.fetched += 1
        body = json.dumps(JWKS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def keys_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/jwks"
    server.shutdown()


@pytest.fixture
def app_check_app(make_app, keys_url, monkeypatch):
    """An app whose App Check keys come from the local server, as Google serves them."""
    import firebase_admin

    monkeypatch.setattr(app_check._AppCheckService, "_JWKS_URL", keys_url)
    # A fresh firebase-admin app, so that its App Check service reads the local keys.
    with contextlib.suppress(ValueError):
        firebase_admin.delete_app(firebase_admin.get_app(f"workshop-chat-{PROJECT}"))

    def make(mode: str, **env: str):
        return make_app(APP_CHECK=mode, **env)

    return make


ROUTES = [
    ("POST", "/", chat_body("Hi")),
    ("GET", "/sessions/s1/steps/empathize/messages", None),
    ("GET", "/sessions/s1/steps/empathize/stream", None),
    ("POST", "/sessions/s1/steps/empathize/stop", None),
    ("GET", "/sessions/s1", None),
    ("DELETE", "/sessions/s1", None),
    ("GET", "/sessions/s1/steps/empathize/files/m1/0", None),
]


def send(client, method: str, path: str, body: Any, token: str | None):
    headers = {"X-Firebase-AppCheck": token} if token is not None else {}
    return client.open(path, method=method, json=body, headers=headers)


def stored(db) -> dict:
    return {
        d.id: d.to_dict() for d in db.collection("sessions/s1/steps/empathize/messages").stream()
    }


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    ("token", "code"),
    [(None, "app_check_missing"), ("", "app_check_missing"), ("not-a-jwt", "app_check_invalid")],
)
def test_enforce_refuses_every_session_route_without_a_valid_token(
    app_check_app, db, standin, method, path, body, token, code
):
    client = app_check_app("enforce").test_client()
    response = send(client, method, path, body, token)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == code
    assert stored(db) == {} and not db.document("sessions/s1").get().exists
    assert standin.requests() == []


@pytest.mark.parametrize(
    "token",
    [
        app_check_token(key=STRANGER),  # signed by a key App Check does not publish
        app_check_token(audience=["projects/another-project"]),
        app_check_token(lifetime=-60),  # expired
    ],
)
def test_enforce_refuses_a_forged_foreign_or_expired_token(app_check_app, db, standin, token):
    client = app_check_app("enforce").test_client()
    response = send(client, "POST", "/", chat_body("Hi"), token)
    assert (response.status_code, response.get_json()["error"]["code"]) == (
        401,
        "app_check_invalid",
    )
    assert standin.requests() == []


def test_enforce_checks_the_token_before_the_body_is_read(app_check_app, standin):
    client = app_check_app("enforce").test_client()
    response = client.post("/", data=b"{not json", content_type="application/json")
    assert response.status_code == 401  # not 400: the body was never parsed


def test_enforce_lets_a_valid_token_through(app_check_app, db, standin):
    client = app_check_app("enforce").test_client()
    response = send(client, "POST", "/", chat_body("Hi"), app_check_token())
    assert text_of(sse_chunks(response.data)) == "Echo: Hi"
    history = send(client, "GET", ROUTES[1][1], None, app_check_token())
    assert history.status_code == 200
    body = chat_body("A photo", "m2")
    body["messages"][-1]["parts"].append(attach(PNG))
    assert send(client, "POST", "/", body, app_check_token()).status_code == 200
    path = "/sessions/s1/steps/empathize/files/m2/0"
    assert send(client, "GET", path, None, app_check_token()).data == PNG
    assert send(client, "GET", path, None, None).status_code == 401


def test_monitor_logs_what_enforce_would_refuse_and_serves_it(app_check_app, standin, caplog):
    client = app_check_app("monitor").test_client()
    with caplog.at_level("WARNING", logger="workshop_chat.web.auth"):
        response = client.post("/", json=chat_body("Hi"))
    assert text_of(sse_chunks(response.data)) == "Echo: Hi"
    refused = [r for r in caplog.records if "App Check would refuse" in r.getMessage()]
    assert [r.fields["code"] for r in refused] == ["app_check_missing"]


def test_off_checks_nothing(make_app, standin):
    response = make_app(APP_CHECK="off").test_client().post("/", json=chat_body("Hi"))
    assert text_of(sse_chunks(response.data)) == "Echo: Hi"


def test_cors_allows_the_app_check_header(make_app):
    response = (
        make_app()
        .test_client()
        .options(
            "/",
            headers={
                "Origin": "https://workshop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-firebase-appcheck",
            },
        )
    )
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "x-firebase-appcheck" in allowed
