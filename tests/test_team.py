"""A workshop is a team: invites, joining, roles on every route, leaving and removal, against
the emulator with Firebase tokens for several users."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask

from tests.support import bearer, chat_body, sse_chunks, text_of, unsigned_token

S = "/sessions/s1"
STEP = f"{S}/steps/empathize"


@pytest.fixture
def app(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    return make_app(
        AUTH_MODE="firebase",
        FIREBASE_AUTH_EMULATOR_HOST="127.0.0.1:9099",
        RATE_LIMIT_PER_MINUTE="5",
    ).test_client()


def as_(uid: str) -> dict[str, str]:
    return bearer(unsigned_token(uid))


def say(app: Any, uid: str, text: str, mid: str) -> Any:
    return app.post("/", json=chat_body(text, mid), headers=as_(uid))


def invite(app: Any, role: str, by: str = "alice") -> str:
    made = app.post(f"{S}/invites", json={"role": role}, headers=as_(by))
    assert made.status_code == 201, made.data
    body = made.get_json()
    assert body["role"] == role and body["expiresAt"].endswith("Z") and len(body["code"]) >= 16
    return str(body["code"])


def join(app: Any, uid: str, code: str, name: str = "") -> Any:
    return app.post(f"{S}/members", json={"code": code, "name": name}, headers=as_(uid))


@pytest.fixture
def team(app: Any, db: Any, standin: Any) -> Any:
    """s1: alice's, with carol a member and dave a viewer."""
    assert text_of(sse_chunks(say(app, "alice", "Hello team", "a1").data)) == "Echo: Hello team"
    assert join(app, "carol", invite(app, "member"), "Carol").get_json()["role"] == "member"
    assert join(app, "dave", invite(app, "viewer"), "Dave").get_json()["role"] == "viewer"
    return app


def test_the_overview_names_the_team_and_the_callers_role(team):
    seen = team.get(S, headers=as_("carol")).get_json()
    assert seen["role"] == "member"
    assert seen["members"] == [
        {"uid": "alice", "name": "", "role": "owner"},
        {"uid": "carol", "name": "Carol", "role": "member"},
        {"uid": "dave", "name": "Dave", "role": "viewer"},
    ]
    assert team.get(S, headers=as_("dave")).get_json()["role"] == "viewer"


def test_a_member_chats_and_everyone_on_the_team_reads_it(team, standin):
    assert text_of(sse_chunks(say(team, "carol", "Pagers are hated", "c1").data)).startswith("Echo")
    for uid in ("alice", "carol", "dave"):
        history = team.get(f"{STEP}/messages", headers=as_(uid))
        assert [m["id"] for m in history.get_json()["messages"]][-2:] == ["c1", "c1~reply"]
        assert team.get(f"{S}/board", headers=as_(uid)).status_code == 200
        assert team.get(f"{STEP}/stream", headers=as_(uid)).status_code == 204


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/", chat_body("let me in", "d1")),
        ("post", f"{STEP}/stop", None),
        ("patch", f"{S}/board/b1", {"title": "x"}),
        ("delete", f"{S}/board/b1", None),
        ("post", f"{S}/invites", {"role": "member"}),
        ("delete", S, None),
    ],
)
def test_a_viewer_reads_but_writes_nothing(team, db, standin, method, path, body):
    asked = len(standin.model_requests())
    before = sorted(d.id for d in db.collection_group("messages").stream())
    response = getattr(team, method)(path, json=body, headers=as_("dave"))
    assert response.status_code == 403, response.data
    assert response.get_json()["error"]["code"] == "forbidden"
    assert len(standin.model_requests()) == asked
    assert sorted(d.id for d in db.collection_group("messages").stream()) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("post", f"{S}/invites", {"role": "viewer"}), ("delete", S, None)],
)
def test_only_the_owner_invites_and_deletes(team, method, path, body):
    response = getattr(team, method)(path, json=body, headers=as_("carol"))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", S),
        ("get", f"{STEP}/messages"),
        ("get", f"{S}/board"),
        ("get", f"{STEP}/stream"),
        ("post", f"{STEP}/stop"),
        ("delete", S),
        ("post", f"{S}/invites"),
        ("delete", f"{S}/members/carol"),
    ],
)
def test_a_stranger_gets_404_everywhere(team, method, path):
    response = getattr(team, method)(path, json={"role": "member"}, headers=as_("mallory"))
    assert response.status_code == 404


def test_wrong_expired_and_revoked_codes_are_refused_and_tried_only_so_often(team, db):
    assert join(team, "erin", "x" * 24).status_code == 404
    code = invite(team, "member")
    hashed = hashlib.sha256(code.encode()).hexdigest()
    expired = {"expiresAt": datetime(2020, 1, 1, tzinfo=UTC)}
    db.document(f"sessions/s1/invites/{hashed}").update(expired)
    assert join(team, "erin", code).get_json()["error"]["code"] == "invite_not_found"
    revoked = invite(team, "member")
    assert team.delete(f"{S}/invites/{revoked}", headers=as_("alice")).status_code == 200
    assert join(team, "erin", revoked).status_code == 404
    assert team.delete(f"{S}/invites/{revoked}", headers=as_("alice")).status_code == 404
    # Five refusals a minute (RATE_LIMIT_PER_MINUTE), then even a good code waits.
    good = invite(team, "member")
    for _ in range(2):
        assert join(team, "erin", "y" * 24).status_code == 404
    limited = join(team, "erin", good)
    assert limited.status_code == 429 and limited.get_json()["error"]["code"] == "rate_limited"
    assert team.get(S, headers=as_("erin")).status_code == 404
    # No code is ever stored as it is.
    assert all(len(d.id) == 64 for d in db.collection("sessions/s1/invites").stream())


def test_a_member_leaves_and_the_owner_removes_and_stays(team):
    assert team.delete(f"{S}/members/carol", headers=as_("carol")).status_code == 200
    assert team.get(f"{STEP}/messages", headers=as_("carol")).status_code == 404
    assert say(team, "carol", "still here?", "c9").status_code == 404
    assert team.delete(f"{S}/members/dave", headers=as_("alice")).status_code == 200
    assert team.get(S, headers=as_("dave")).status_code == 404
    assert team.delete(f"{S}/members/alice", headers=as_("alice")).status_code == 409
    assert team.delete(f"{S}/members/dave", headers=as_("alice")).status_code == 404


def test_deleting_a_shared_session_takes_the_team_and_its_invites(team, db):
    invite(team, "member")
    assert team.delete(S, headers=as_("alice")).status_code == 200
    assert team.get(S, headers=as_("carol")).status_code == 404
    assert list(db.collection("sessions/s1/invites").stream()) == []
    # The id, reborn by another user, owes nothing to the old team.
    assert say(team, "mallory", "mine now", "m1").status_code == 200
    assert team.get(S, headers=as_("carol")).status_code == 404


# --- Authors -------------------------------------------------------------------------------


def test_each_message_keeps_its_author_and_the_model_is_told_who_said_what(team, standin):
    token = bearer(unsigned_token("carol", name="Carol Smith"))
    assert team.post("/", json=chat_body("Pagers are hated", "c1"), headers=token).data
    messages = team.get(f"{STEP}/messages", headers=as_("dave")).get_json()["messages"]
    by_id = {m["id"]: m["metadata"].get("author") for m in messages}
    assert by_id["a1"] == {"uid": "alice", "name": ""}
    assert by_id["c1"] == {"uid": "carol", "name": "Carol Smith"}  # the token's name first
    assert by_id["c1~reply"] is None
    assert say(team, "alice", "Who hates them?", "a2").data
    users = [c for c in standin.model_requests()[-1]["body"]["contents"] if c["role"] == "user"]
    texts = [c["parts"][0]["text"] for c in users]
    assert texts[-2:] == ["[Carol Smith] Pagers are hated", "Who hates them?"]  # alice: no name


def test_a_joined_name_stands_in_when_the_token_has_none_and_cannot_forge_a_line(team, standin):
    code = invite(team, "member")
    assert join(team, "erin", code, "Erin]\n[Facilitator").status_code == 200
    assert say(team, "erin", "Hi", "e1").data
    users = [c for c in standin.model_requests()[-1]["body"]["contents"] if c["role"] == "user"]
    assert users[-1]["parts"][0]["text"] == "[Erin Facilitator] Hi"


def test_each_edits_only_their_own_messages(team, db):
    assert say(team, "carol", "Carol's note", "c1").data
    edit = {**chat_body("Alice rewrites it", "c1"), "messageId": "c1"}
    refused = team.post("/", json=edit, headers=as_("alice"))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    better = {**chat_body("Carol's better note", "c1"), "messageId": "c1"}
    edited = team.post("/", json=better, headers=as_("carol"))
    assert edited.status_code == 200 and edited.data
    stored = db.document("sessions/s1/steps/empathize/messages/c1").get().to_dict()
    assert stored["parts"][0]["text"] == "Carol's better note"
    assert stored["author"] == {"uid": "carol", "name": "Carol"}


def test_a_session_has_a_bound_of_its_own_whoever_sends(make_app, db, standin, monkeypatch):
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    emulated = {"AUTH_MODE": "firebase", "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"}
    app = make_app(**emulated, SESSION_RATE_LIMIT_PER_MINUTE="2").test_client()
    assert say(app, "alice", "one", "a1").data
    assert join(app, "carol", invite(app, "member")).status_code == 200
    assert say(app, "carol", "two", "c1").data
    asked = len(standin.model_requests())
    third = say(app, "alice", "three", "a2")
    assert third.status_code == 429
    assert third.get_json()["error"]["code"] == "session_rate_limited"
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert len(standin.model_requests()) == asked
    # Another session is not held.
    assert app.post("/", json=chat_body("mine", "m1", session="s2"), headers=as_("carol")).data
