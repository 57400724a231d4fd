"""Only owners get in: Firebase ID tokens, verified locally, and sessions that belong to a uid.

The production path is exercised for real: firebase-admin verifies RS256 tokens signed by a test
key whose certificate it fetches from Google's URL, answered here by a transport adapter mounted
on firebase-admin's own CacheControl session, so nothing leaves the machine.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import io
import json
import os
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from cachecontrol.adapter import CacheControlAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from firebase_admin import _token_gen
from firebase_admin import auth as firebase_auth
from flask import Flask, request
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

from tests import support
from tests.support import bearer, chat_body, sse_chunks, text_of, unsigned_token
from tests.test_attachments import attach, with_files
from tests.test_files import PNG
from workshop_chat.config import Config, ConfigError
from workshop_chat.web.auth import FirebaseAuth, NoAuth

PROJECT = support.PROJECT
ISSUER = f"https://securetoken.google.com/{PROJECT}"
GOOGLE = "https://www.googleapis.com/"
assert _token_gen.ID_TOKEN_CERT_URI.startswith(GOOGLE)

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "test-kid-1"


def certificate(key: rsa.RSAPrivateKey) -> str:
    """A self-signed X.509 certificate, the form Google publishes its token keys in."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CERTS = {KID: certificate(KEY), "test-kid-2": certificate(rsa.generate_private_key(65537, 2048))}


def id_token(
    uid: str = "alice",
    *,
    key: rsa.RSAPrivateKey = KEY,
    kid: str = KID,
    audience: str = PROJECT,
    issuer: str = ISSUER,
    lifetime: int = 3600,
    age: int = 10,
    **claims: Any,
) -> str:
    """A Firebase ID token as Firebase Auth issues it: RS256, `kid`, iss/aud for the project."""
    now = int(time.time())
    payload = {
        "iss": issuer,
        "aud": audience,
        "auth_time": now - age,
        "user_id": uid,
        "sub": uid,
        "iat": now - age,
        "exp": now - age + lifetime,
        "firebase": {"identities": {}, "sign_in_provider": "anonymous"},
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


class _Socket:
    """Enough of a socket for http.client to parse a canned response from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO(self.data)


class _ServeCerts(HTTPAdapter):
    """The network, as far as firebase-admin can tell: Google's certificate endpoint.

    The response is parsed by http.client from raw bytes, as a real connection would be, so
    that CacheControl sees the body end and caches it exactly as it does in production.
    """

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.fetches: list[str] = []

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.fetches.append(request.url)
        known = request.url == _token_gen.ID_TOKEN_CERT_URI
        status = self.status if known else 404
        body = json.dumps(CERTS).encode() if known and status == 200 else b"{}"
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            "Content-Type: application/json; charset=UTF-8\r\n"
            "Cache-Control: public, max-age=3600, must-revalidate, no-transform\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        parsed = http.client.HTTPResponse(_Socket(head.encode() + body))  # type: ignore[arg-type]
        parsed.begin()
        raw = HTTPResponse(
            body=parsed,
            headers=dict(parsed.getheaders()),
            status=parsed.status,
            preload_content=False,
            decode_content=False,
            original_response=parsed,
        )
        return self.build_response(request, raw)


class CertEndpoint(CacheControlAdapter, _ServeCerts):
    """Mounted in front of the session's own caching: the cache answers, or `_ServeCerts` does."""


@pytest.fixture
def google(monkeypatch):
    """Google's certificate endpoint, served locally to firebase-admin's verifier session."""
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST", raising=False)
    verifier = FirebaseAuth(PROJECT)
    session = firebase_auth._get_client(verifier.app)._token_verifier.request.session
    endpoint = CertEndpoint()
    session.mount(GOOGLE, endpoint)
    yield endpoint
    session.adapters.pop(GOOGLE, None)


@pytest.fixture
def app(make_app, google):
    return make_app(AUTH_MODE="firebase")


@pytest.fixture
def client(app):
    return app.test_client()


def error_of(response) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    return response.get_json()["error"]


# --- The default and the verifier the configuration picks ---------------------------------


def test_firebase_is_the_default_auth_mode():
    config = Config.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT, "GEMINI_API_KEY": "k"})
    assert config.auth_mode == "firebase"
    blank = Config.from_env(
        {"GOOGLE_CLOUD_PROJECT": PROJECT, "GEMINI_API_KEY": "k", "AUTH_MODE": ""}
    )
    assert blank.auth_mode == "firebase"


def test_the_built_app_verifies_tokens_unless_auth_mode_is_none(make_app):
    assert isinstance(make_app(AUTH_MODE="firebase").api.verifier, FirebaseAuth)
    assert isinstance(make_app(AUTH_MODE="none").api.verifier, NoAuth)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"AUTH_MODE": "off"}, "AUTH_MODE must be 'firebase' or 'none', not 'off'"),
        (
            {"K_SERVICE": "chat", "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"},
            "FIREBASE_AUTH_EMULATOR_HOST is set on a deployed function",
        ),
        ({"K_SERVICE": "chat", "AUTH_MODE": "none"}, "AUTH_MODE=none on a deployed function"),
    ],
)
def test_unsafe_auth_settings_refuse_to_start(env, problem):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT, "GEMINI_API_KEY": "k", **env})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem)


def test_the_auth_emulator_is_fine_when_not_deployed():
    config = Config.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "GEMINI_API_KEY": "k",
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        }
    )
    assert config.auth_emulator and not config.deployed


def start_up(**env: str) -> tuple[int, list[dict[str, Any]]]:
    """Run service.build_from_env in a fresh interpreter; its stdout is JSON log lines."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCLOUD", "K_"))}
    for local in (
        "FIREBASE_AUTH_EMULATOR_HOST",
        "FIRESTORE_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
    ):
        keep.pop(local, None)
    full = {
        **keep,
        "PYTHONPATH": str(support.ROOT / "functions"),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "GEMINI_API_KEY": "k",
        # Never contacted: building the clients makes no call.
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
        **env,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from workshop_chat.service import build_from_env; build_from_env()",
        ],
        env=full,
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return done.returncode, lines


def test_auth_mode_none_warns_loudly_at_start_up():
    code, lines = start_up(AUTH_MODE="none")
    assert code == 0
    warnings = [line for line in lines if line["severity"] == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0]["message"].startswith("AUTH_MODE=none: every caller is the same user")
    assert "Never deploy" in warnings[0]["message"]
    assert lines[-1]["message"] == "workshop-chat ready"
    assert lines[-1]["authMode"] == "none"


def test_firebase_mode_starts_without_warnings():
    code, lines = start_up()
    assert code == 0
    assert [line["severity"] for line in lines] == ["INFO"]
    assert lines[0]["authMode"] == "firebase"


def test_the_auth_emulator_warns_at_start_up_and_refuses_a_deployed_start():
    code, lines = start_up(FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099")
    assert code == 0
    assert any(
        line["severity"] == "WARNING" and "unsigned ID tokens are accepted" in line["message"]
        for line in lines
    )
    code, lines = start_up(
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099", K_SERVICE="chat", FIRESTORE_EMULATOR_HOST=""
    )
    assert code == 3
    assert [line["severity"] for line in lines] == ["CRITICAL"]
    assert "FIREBASE_AUTH_EMULATOR_HOST is set on a deployed function" in lines[0]["message"]


# --- Verification of real, signed tokens -----------------------------------------------------


def test_a_valid_token_streams_and_makes_its_uid_the_owner(client, db, google):
    response = client.post("/", json=chat_body("Hello"), headers=bearer(id_token("alice")))
    assert response.status_code == 200
    assert text_of(sse_chunks(response.data)) == "Echo: Hello"
    assert db.document("sessions/s1").get().to_dict()["ownerUid"] == "alice"
    history = client.get("/sessions/s1/steps/empathize/messages", headers=bearer(id_token("alice")))
    assert history.status_code == 200
    assert [m["id"] for m in history.get_json()["messages"]] == ["m1", "m1~reply"]
    assert google.fetches == [_token_gen.ID_TOKEN_CERT_URI]


def test_an_anonymous_account_is_refused_where_anonymous_users_are_denied(make_app, db, google):
    client = make_app(AUTH_MODE="firebase", ANONYMOUS_USERS="deny").test_client()
    anonymous = bearer(id_token("drive-by"))
    response = client.post("/", json=chat_body("Hello"), headers=anonymous)
    assert response.status_code == 403
    assert error_of(response)["code"] == "anonymous_not_allowed"
    assert not db.document("sessions/s1").get().exists
    signed_in = id_token("alice", firebase={"identities": {}, "sign_in_provider": "password"})
    response = client.post("/", json=chat_body("Hello"), headers=bearer(signed_in))
    assert response.status_code == 200 and text_of(sse_chunks(response.data)) == "Echo: Hello"


def test_certificates_are_fetched_once_for_many_verifications(client, google):
    for i in range(25):
        response = client.get(
            "/sessions/nope/steps/define/messages", headers=bearer(id_token(f"user{i}"))
        )
        assert response.status_code == 404  # verified, then: no such session
    rejected = client.get(
        "/sessions/nope/steps/define/messages", headers=bearer(id_token(key=STRANGER))
    )
    assert rejected.status_code == 401
    assert google.fetches == [_token_gen.ID_TOKEN_CERT_URI]


NOW = int(time.time())
BAD_CREDENTIALS = {
    "missing header": None,
    "basic scheme": "Basic x",
    "bearer without token": "Bearer ",
    "garbage": "Bearer garbage",
    "three garbage segments": "Bearer a.b.c",
    "oversized": "Bearer " + "a" * 9000,
    "expired": f"Bearer {id_token(lifetime=3600, age=3700)}",
    "issued in the future": f"Bearer {id_token(age=-600)}",
    "known kid, wrong key": f"Bearer {id_token(key=STRANGER)}",
    "unknown kid": f"Bearer {id_token(key=STRANGER, kid='no-such-kid')}",
    "no kid": "Bearer " + jwt.encode({"sub": "alice", "aud": PROJECT, "iss": ISSUER}, KEY, "RS256"),
    "HS256": "Bearer "
    + jwt.encode(
        {"sub": "alice", "aud": PROJECT, "iss": ISSUER, "exp": NOW + 3600, "iat": NOW},
        "secret-secret-secret-secret-secret",
        "HS256",
        headers={"kid": KID},
    ),
    "wrong audience": f"Bearer {id_token(audience='demo-other-project')}",
    "wrong issuer": f"Bearer {id_token(issuer='https://securetoken.google.com/demo-other-project')}",
    "wrong project": "Bearer "
    + id_token(audience="demo-other", issuer="https://securetoken.google.com/demo-other"),
    "empty sub": f"Bearer {id_token(uid='')}",
    "unsigned (emulator) token": f"Bearer {unsigned_token()}",
}


@pytest.fixture(scope="module")
def gatekeeper(emulator, standin_service):
    """One app for the many requests that must not get past the token check.

    Built once (a genai client costs ~0.3 s): no request here gets far enough to leave state.
    """
    from google.cloud import firestore
    from google.genai import Client, types

    from tests.support import BASE_ENV
    from workshop_chat.service import build

    api = build(
        Config.from_env({**BASE_ENV, "AUTH_MODE": "firebase"}),
        db=firestore.Client(project=PROJECT),
        genai_client=Client(
            api_key="k", http_options=types.HttpOptions(base_url=standin_service.url)
        ),
    )
    app = Flask("gatekeeper")
    app.add_url_rule("/<path:path>", "any", lambda path: api(request), methods=["GET", "POST"])
    app.add_url_rule("/", "root", lambda: api(request), methods=["POST"])
    return app.test_client()


@pytest.mark.parametrize("authorization", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize("route", ["post", "history"])
def test_bad_credentials_get_401_json_and_touch_nothing(
    gatekeeper, google, db, standin, authorization, route
):
    headers = {} if authorization is None else {"Authorization": authorization}
    if route == "post":
        response = gatekeeper.post("/", json=chat_body("Hello"), headers=headers)
    else:
        response = gatekeeper.get("/sessions/s1/steps/empathize/messages", headers=headers)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] in ("unauthenticated", "invalid_token", "token_expired")
    assert error["message"]
    assert list(db.collections()) == []
    assert standin.requests() == []


def test_an_expired_token_says_so(client):
    response = client.post("/", json=chat_body(), headers=bearer(id_token(lifetime=3600, age=3700)))
    assert error_of(response)["code"] == "token_expired"


def test_unreachable_certificates_are_503_not_401(make_app, google):
    google.status = 500
    client = make_app(AUTH_MODE="firebase").test_client()
    response = client.post("/", json=chat_body(), headers=bearer(id_token()))
    assert response.status_code == 503
    assert error_of(response)["code"] == "auth_unavailable"


def test_the_body_is_not_read_before_the_caller_is_known(client):
    """An anonymous caller cannot make the function parse (or size-check) anything."""
    response = client.post("/", data="x" * 1_000_000, content_type="application/json")
    assert response.status_code == 401


# --- The Firebase Auth emulator ---------------------------------------------------------


@pytest.fixture
def emulated(monkeypatch, make_app):
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    return make_app(AUTH_MODE="firebase", FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099")


def test_with_the_auth_emulator_unsigned_tokens_are_accepted(emulated, db):
    client = emulated.test_client()
    response = client.post("/", json=chat_body("Hi"), headers=bearer(unsigned_token("emu-user")))
    assert response.status_code == 200
    assert text_of(sse_chunks(response.data)) == "Echo: Hi"
    assert db.document("sessions/s1").get().to_dict()["ownerUid"] == "emu-user"


@pytest.mark.parametrize(
    "token",
    [
        unsigned_token(audience="demo-other-project"),
        unsigned_token(uid=""),
        unsigned_token(iss="https://example.com/"),
        "not-a-token",
    ],
)
def test_the_auth_emulator_still_checks_project_issuer_and_subject(emulated, db, token):
    response = emulated.test_client().post("/", json=chat_body(), headers=bearer(token))
    assert response.status_code == 401
    assert list(db.collections()) == []


@pytest.mark.parametrize("uid", ["a/b", ".", "..", "__x__", "__proto__", "\ud800", "x" * 129])
def test_a_uid_that_cannot_name_a_document_is_refused(emulated, db, uid):
    response = emulated.test_client().post(
        "/", json=chat_body(), headers=bearer(unsigned_token(uid))
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"
    assert list(db.collections()) == []


# --- Ownership ----------------------------------------------------------------------------


NOT_FOUND = {"error": {"code": "not_found", "message": "no such session"}}
HISTORY = "/sessions/s1/steps/empathize/messages"
FILE = "/sessions/s1/steps/empathize/files/m1/0"


def test_another_user_sees_someone_elses_session_as_missing(client, db, standin, storage_client):
    alice, bob = bearer(id_token("alice")), bearer(id_token("bob"))
    body = chat_body("Secret plan")
    body["messages"][-1]["parts"].append(attach(PNG))
    first = client.post("/", json=body, headers=alice)
    assert text_of(sse_chunks(first.data)).startswith("Echo: Secret plan [image/png")
    objects = [b.name for b in storage_client.list_blobs(support.FILES_BUCKET)]
    before = {
        d.id: d.to_dict() for d in db.collection("sessions/s1/steps/empathize/messages").stream()
    }
    calls = len(standin.model_requests())

    missing_get = client.get("/sessions/nothing-here/steps/empathize/messages", headers=bob)
    answers = {
        "history": client.get(HISTORY, headers=bob),
        "other step": client.get("/sessions/s1/steps/define/messages", headers=bob),
        "send": client.post("/", json=chat_body("Mine now", "b1"), headers=bob),
        "same message id": client.post("/", json=chat_body("Secret plan"), headers=bob),
        "regenerate": client.post(
            "/",
            json=chat_body("x", trigger="regenerate-message", messageId="m1~reply"),
            headers=bob,
        ),
        "new step": client.post("/", json=chat_body("Hi", "b2", step="define"), headers=bob),
        "resume": client.get("/sessions/s1/steps/empathize/stream", headers=bob),
        "stop": client.post("/sessions/s1/steps/empathize/stop", headers=bob),
        "overview": client.get("/sessions/s1", headers=bob),
        "delete": client.delete("/sessions/s1", headers=bob),
        "file": client.get(FILE, headers=bob),
        "send a file": client.post("/", json=with_files("Mine", "b3", attach(PNG)), headers=bob),
    }
    assert client.get(FILE).status_code == 401
    assert missing_get.status_code == 404
    for name, response in answers.items():
        assert response.status_code == 404, name
        assert response.data == missing_get.data, name
        assert response.get_json() == NOT_FOUND
    after = {
        d.id: d.to_dict() for d in db.collection("sessions/s1/steps/empathize/messages").stream()
    }
    assert after == before
    assert [d.id for d in db.collection("sessions/s1/steps").stream()] == ["empathize"]
    assert db.document("sessions/s1").get().to_dict()["ownerUid"] == "alice"
    assert len(standin.model_requests()) == calls
    assert [b.name for b in storage_client.list_blobs(support.FILES_BUCKET)] == objects
    # The owner still gets everything.
    assert client.get(HISTORY, headers=alice).status_code == 200
    assert client.get(FILE, headers=alice).data == PNG


def test_another_users_stop_is_not_found_and_the_reply_goes_on(client, db):
    import threading

    alice, bob = bearer(id_token("alice")), bearer(id_token("bob"))
    done: list = []
    slow = chat_body("Mine [[standin chunks=12 delay_ms=100]]")
    thread = threading.Thread(
        target=lambda: done.append(client.post("/", json=slow, headers=alice).data)
    )
    thread.start()
    reply = "sessions/s1/steps/empathize/messages/m1~reply"
    deadline = time.monotonic() + 10
    while not db.document(reply).get().exists and time.monotonic() < deadline:
        time.sleep(0.02)
    stop = client.post("/sessions/s1/steps/empathize/stop", headers=bob)
    assert stop.status_code == 404 and stop.get_json() == NOT_FOUND
    thread.join(30)
    assert text_of(sse_chunks(done[0])) == "Echo: Mine"
    assert db.document(reply).get().to_dict()["status"] == "complete"


def test_each_user_owns_the_sessions_they_start(client, db):
    alice, bob = bearer(id_token("alice")), bearer(id_token("bob"))
    assert client.post("/", json=chat_body("A", session="sa"), headers=alice).status_code == 200
    assert client.post("/", json=chat_body("B", session="sb"), headers=bob).status_code == 200
    assert db.document("sessions/sa").get().to_dict()["ownerUid"] == "alice"
    assert db.document("sessions/sb").get().to_dict()["ownerUid"] == "bob"
    assert client.get("/sessions/sb/steps/empathize/messages", headers=alice).status_code == 404
    assert client.get("/sessions/sa/steps/empathize/messages", headers=bob).status_code == 404


@pytest.mark.parametrize(
    "forged",
    [
        {"ownerUid": "alice"},
        {"uid": "alice"},
        {"userId": "alice"},
        {"owner": "alice", "auth": {"uid": "alice"}},
    ],
)
def test_a_session_cannot_be_created_under_another_users_id(client, db, forged):
    bob = bearer(id_token("bob"))
    assert client.post("/", json=chat_body("Hi", **forged), headers=bob).status_code == 200
    assert db.document("sessions/s1").get().to_dict()["ownerUid"] == "bob"
    alice = bearer(id_token("alice"))
    assert client.get(HISTORY, headers=alice).get_json() == NOT_FOUND


def test_ownership_holds_across_instances(make_app, google, db):
    """The owner is read from Firestore, not from one instance's memory."""
    one = make_app(AUTH_MODE="firebase").test_client()
    two = make_app(AUTH_MODE="firebase").test_client()
    assert one.post("/", json=chat_body("Hi"), headers=bearer(id_token("alice"))).status_code == 200
    response = two.post("/", json=chat_body("Hi", "b1"), headers=bearer(id_token("bob")))
    assert response.get_json() == NOT_FOUND
    assert two.get(HISTORY, headers=bearer(id_token("alice"))).status_code == 200


# --- CORS: browsers on allowlisted origins only, with the Authorization header ------------

ORIGIN = "https://workshop.example"  # BASE_ENV's ALLOWED_ORIGINS


def test_a_preflight_allows_the_authorization_header_without_a_token(client):
    response = client.options(
        "/",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods
    # Tokens travel in a header, never in cookies: credentials mode stays off.
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


def test_errors_carry_cors_headers_so_the_browser_can_read_them(make_app, google):
    client = make_app(AUTH_MODE="firebase", RATE_LIMIT_PER_MINUTE="1").test_client()
    origin = {"Origin": ORIGIN}
    token = {**origin, **bearer(id_token("alice"))}
    answers = {
        401: client.post("/", json=chat_body(), headers=origin),
        404: client.get("/sessions/none/steps/define/messages", headers=token),
        200: client.post("/", json=chat_body("Hi"), headers=token),
        429: client.post("/", json=chat_body("Again", "m2"), headers=token),
        413: make_app(AUTH_MODE="none", MAX_REQUEST_BYTES="1024")
        .test_client()
        .post("/", json=chat_body("x" * 2000), headers=origin),
    }
    for status, response in answers.items():
        assert response.status_code == status
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN, status
        exposed = {
            h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert {"retry-after", "x-vercel-ai-ui-message-stream"} <= exposed
    assert answers[429].headers["Retry-After"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://workshop.example.evil.example",
        "https://evilworkshop.example",
        "http://workshop.example",
        "https://workshop.example:8443",
        "https://workshop.example/",
        "null",
        "",
    ],
)
def test_lookalike_origins_get_no_cors_headers(client, origin):
    for response in (
        client.options(
            "/",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        ),
        client.post("/", json=chat_body(), headers={"Origin": origin}),
    ):
        names = [name.lower() for name, _ in response.headers.items()]
        assert not [name for name in names if name.startswith("access-control-")]


def test_without_an_allowlist_no_origin_gets_cors_headers(make_app):
    client = make_app(ALLOWED_ORIGINS="").test_client()
    response = client.options(
        "/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Headers" not in response.headers
