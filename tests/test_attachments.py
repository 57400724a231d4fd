"""Files in the conversation, end to end: the request, Cloud Storage and Firestore (emulators),
the model's request (the stand-in's recording) and the file route."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request
from google.oauth2.credentials import Credentials

from tests import support
from tests.support import BASE_ENV, chat_body, sse_chunks, text_of
from tests.test_files import JPEG, PDF, PNG, TEXT, data_url
from workshop_chat.cloud.gemini import make_client
from workshop_chat.config import Config
from workshop_chat.service import build

MESSAGES = "sessions/s1/steps/empathize/messages"


def obj(message_id: str, n: int, data: bytes, session: str = "s1", step: str = "empathize") -> str:
    """Where a message's n-th file is stored: its number and its content name it."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"sessions/{session}/steps/{step}/messages/{message_id}/{n}-{digest}"


def attach(data: bytes, media_type: str = "image/png", name: str = "wall.png") -> dict[str, Any]:
    return {
        "type": "file",
        "mediaType": media_type,
        "filename": name,
        "url": data_url(data, media_type),
    }


def with_files(text: str, message_id: str, *files: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = chat_body(text, message_id, **extra)
    body["messages"][-1]["parts"] += list(files)
    return body


def seen(data: bytes, media_type: str) -> str:
    """What the stand-in's echo says of a file it got whole."""
    return f"[{media_type}, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}]"


def objects(storage_client: Any, prefix: str = "sessions/") -> dict[str, Any]:
    return {b.name: b for b in storage_client.list_blobs(support.FILES_BUCKET, prefix=prefix)}


def doc(db: Any, message_id: str) -> dict[str, Any] | None:
    snap = db.document(f"{MESSAGES}/{message_id}").get()
    return snap.to_dict() if snap.exists else None


def all_docs(db: Any) -> list[str]:
    return [d.reference.path for d in db.collection_group("messages").stream()] + [
        d.reference.path for d in db.collection("sessions").stream()
    ]


def user_parts(request: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [c["parts"] for c in request["body"]["contents"] if c["role"] == "user"]


# --- The bytes reach the model, the bucket and the history ----------------------------------------


def test_the_files_reach_the_model_unchanged(client: Any, standin: Any) -> None:
    response = client.post(
        "/", json=with_files("Our wall", "m1", attach(PNG), attach(PDF, "application/pdf", "n.pdf"))
    )
    assert response.status_code == 200
    assert text_of(sse_chunks(response.data)) == (
        f"Echo: Our wall {seen(PNG, 'image/png')} {seen(PDF, 'application/pdf')}"
    )
    (request,) = standin.model_requests()
    assert user_parts(request)[-1] == [
        {"text": "Our wall"},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
        {"inlineData": {"mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}},
    ]


def test_one_object_per_file_and_firestore_keeps_only_a_reference(
    client: Any, db: Any, storage_client: Any
) -> None:
    body = with_files(
        "Notes", "m1", attach(JPEG, "image/jpeg", "a.jpg"), attach(TEXT, "text/plain", "n.txt")
    )
    assert client.post("/", json=body).status_code == 200
    stored = objects(storage_client)
    assert sorted(stored) == [obj("m1", 0, JPEG), obj("m1", 1, TEXT)]
    assert stored[obj("m1", 0, JPEG)].download_as_bytes() == JPEG
    assert stored[obj("m1", 1, TEXT)].download_as_bytes() == TEXT
    assert stored[obj("m1", 0, JPEG)].content_type == "image/jpeg"
    assert doc(db, "m1")["parts"] == [
        {"type": "text", "text": "Notes"},
        {
            "type": "file",
            "n": 0,
            "mediaType": "image/jpeg",
            "filename": "a.jpg",
            "size": len(JPEG),
            "sha256": hashlib.sha256(JPEG).hexdigest(),
            "path": obj("m1", 0, JPEG),
        },
        {
            "type": "file",
            "n": 1,
            "mediaType": "text/plain",
            "filename": "n.txt",
            "size": len(TEXT),
            "sha256": hashlib.sha256(TEXT).hexdigest(),
            "path": obj("m1", 1, TEXT),
        },
    ]


def test_a_file_alone_is_a_message(client: Any, standin: Any, db: Any) -> None:
    body = chat_body("", "m1")
    body["messages"][-1]["parts"] = [attach(PNG)]
    response = client.post("/", json=body)
    assert response.status_code == 200, response.data
    assert text_of(sse_chunks(response.data)) == f"Echo:  {seen(PNG, 'image/png')}"
    assert [p["type"] for p in doc(db, "m1")["parts"]] == ["file"]


def test_the_history_gives_each_file_back_at_its_route(client: Any) -> None:
    body = with_files(
        "Look", "m1", attach(PNG), attach(PDF, "application/pdf", "interview notes.pdf")
    )
    assert client.post("/", json=body).status_code == 200
    (user, _reply) = client.get("/sessions/s1/steps/empathize/messages").get_json()["messages"]
    base = "http://localhost/sessions/s1/steps/empathize/files/m1"
    assert user["parts"] == [
        {"type": "text", "text": "Look"},
        {"type": "file", "mediaType": "image/png", "filename": "wall.png", "url": f"{base}/0"},
        {
            "type": "file",
            "mediaType": "application/pdf",
            "filename": "interview notes.pdf",
            "url": f"{base}/1",
        },
    ]
    image = client.get(user["parts"][1]["url"])
    assert image.status_code == 200 and image.data == PNG
    assert image.headers["Content-Type"] == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    assert image.headers["Cache-Control"] == "private, no-store"
    assert image.headers["Content-Disposition"] == "inline; filename*=UTF-8''wall.png"
    pdf = client.get(user["parts"][2]["url"])
    assert pdf.data == PDF and pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Content-Disposition"] == (
        "attachment; filename*=UTF-8''interview%20notes.pdf"
    )


def test_file_urls_are_https_behind_cloud_runs_front_end(client: Any) -> None:
    assert client.post("/", json=with_files("x", "m1", attach(PNG))).status_code == 200
    history = client.get(
        "/sessions/s1/steps/empathize/messages",
        headers={"X-Forwarded-Proto": "https", "Host": "chat-abc-ew.a.run.app"},
    )
    (user, _reply) = history.get_json()["messages"]
    assert user["parts"][1]["url"] == (
        "https://chat-abc-ew.a.run.app/sessions/s1/steps/empathize/files/m1/0"
    )


def test_another_instance_serves_a_file_its_cached_copy_has_not_seen(
    make_app: Callable[..., Flask],
) -> None:
    other = make_app().test_client()
    this = make_app().test_client()
    assert this.post("/", json=chat_body("first", "m0")).status_code == 200
    assert this.get("/sessions/s1/steps/empathize/messages").status_code == 200  # cached
    assert other.post("/", json=with_files("x", "m1", attach(PNG))).status_code == 200
    assert this.get("/sessions/s1/steps/empathize/files/m1/0").data == PNG


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/s1/steps/empathize/files/m1/1",  # no such file
        "/sessions/s1/steps/empathize/files/m1~reply/0",  # a reply has none
        "/sessions/s1/steps/empathize/files/m9/0",
        "/sessions/s1/steps/define/files/m1/0",
        "/sessions/s2/steps/empathize/files/m1/0",
    ],
)
def test_the_file_route_answers_404_for_what_is_not_there(client: Any, path: str) -> None:
    assert client.post("/", json=with_files("x", "m1", attach(PNG))).status_code == 200
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in ("not_found", "session_not_found")


def test_the_file_route_takes_only_get(client: Any) -> None:
    assert client.post("/", json=with_files("x", "m1", attach(PNG))).status_code == 200
    response = client.post("/sessions/s1/steps/empathize/files/m1/0")
    assert response.status_code == 405


def test_a_file_whose_object_is_gone_is_404(client: Any, storage_client: Any) -> None:
    assert client.post("/", json=with_files("x", "m1", attach(PNG))).status_code == 200
    storage_client.bucket(support.FILES_BUCKET).blob(obj("m1", 0, PNG)).delete()
    assert client.get("/sessions/s1/steps/empathize/files/m1/0").status_code == 404


# --- Refusals write nothing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "status", "code"),
    [
        (
            {"type": "file", "mediaType": "image/png", "url": "https://x.example/a.png"},
            400,
            "unsupported_file_url",
        ),
        (
            {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,%%%"},
            400,
            "invalid_base64",
        ),
        (
            {"type": "file", "mediaType": "image/png", "url": "data:image/png,abc"},
            400,
            "invalid_data_url",
        ),
        (attach(b"<svg/>", "image/svg+xml", "x.svg"), 415, "unsupported_file_type"),
        (attach(b"\x89PNG\r\n\x1a\n" + bytes(2000)), 413, "file_too_large"),
        (attach(JPEG, "image/png"), 400, "file_content_mismatch"),
    ],
)
def test_a_refused_file_writes_nothing_and_calls_no_model(
    make_app: Callable[..., Flask],
    db: Any,
    storage_client: Any,
    standin: Any,
    part: dict[str, Any],
    status: int,
    code: str,
) -> None:
    client = make_app(MAX_FILE_BYTES="1024").test_client()
    # A good file first: nothing of it may be stored either.
    response = client.post("/", json=with_files("Here", "m1", attach(PNG[:900]), part))
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)
    assert all_docs(db) == []
    assert objects(storage_client) == {}
    assert standin.model_requests() == []


def test_too_many_files_and_too_many_bytes_are_refused(
    make_app: Callable[..., Flask], db: Any, storage_client: Any, standin: Any
) -> None:
    client = make_app(MAX_FILES="2", MAX_FILE_BYTES="1024", MAX_FILES_BYTES="1500").test_client()
    three = with_files("x", "m1", *[attach(PNG[:500])] * 3)
    response = client.post("/", json=three)
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "too_many_files")
    heavy = with_files("x", "m1", attach(PNG[:800]), attach(PNG[:800]))
    response = client.post("/", json=heavy)
    assert (response.status_code, response.get_json()["error"]["code"]) == (413, "files_too_large")
    assert all_docs(db) == [] and objects(storage_client) == {} and standin.model_requests() == []


def test_only_a_request_with_files_may_be_larger_than_a_text_one(
    make_app: Callable[..., Flask], db: Any
) -> None:
    client = make_app(MAX_REQUEST_BYTES="20000", MAX_MESSAGE_CHARS="100000").test_client()
    padded = chat_body("x" * 30_000, "m1")
    response = client.post("/", json=padded)
    assert (response.status_code, response.get_json()["error"]["code"]) == (413, "body_too_large")
    assert all_docs(db) == []
    big = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100  # 25.6 kB, 34 kB in base64
    response = client.post("/", json=with_files("Big wall", "m1", attach(big)))
    assert response.status_code == 200, response.data
    assert seen(big, "image/png") in text_of(sse_chunks(response.data))


def test_a_small_file_does_not_make_room_for_a_large_text(
    make_app: Callable[..., Flask], db: Any, storage_client: Any
) -> None:
    client = make_app(MAX_REQUEST_BYTES="20000", MAX_MESSAGE_CHARS="100000").test_client()
    padded = with_files("x" * 30_000, "m1", attach(TEXT, "text/plain", "t.txt"))
    response = client.post("/", json=padded)
    assert (response.status_code, response.get_json()["error"]["code"]) == (413, "body_too_large")
    assert all_docs(db) == [] and objects(storage_client) == {}


def test_the_default_transport_may_send_earlier_files_again(
    make_app: Callable[..., Flask], storage_client: Any, standin: Any
) -> None:
    """Until a reload, useChat's default transport sends every message, with the data: URLs of
    files sent before: they count as file parts (and are not read), not as text."""
    client = make_app(MAX_REQUEST_BYTES="20000").test_client()
    big = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100  # 34 kB in base64
    first = with_files("wall", "m1", attach(big))
    assert client.post("/", json=first).status_code == 200
    then = chat_body("what do you see?", "m2")
    then["messages"] = [
        first["messages"][0],
        {"id": "m1~reply", "role": "assistant", "parts": [{"type": "text", "text": "Echo"}]},
        *then["messages"],
    ]
    response = client.post("/", json=then)
    assert response.status_code == 200, response.data
    assert text_of(sse_chunks(response.data)) == "Echo: what do you see?"
    assert len(objects(storage_client)) == 1
    # The model got the file once, from the stored message.
    assert [len(parts) for parts in user_parts(standin.model_requests()[-1])] == [2, 1]


def test_files_in_earlier_messages_of_the_request_are_not_read(
    client: Any, storage_client: Any, standin: Any
) -> None:
    body = chat_body("now", "m2")
    body["messages"].insert(
        0, {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "x"}, attach(PNG)]}
    )
    body["messages"][0]["parts"][1]["url"] = "https://x.example/never-fetched.png"
    response = client.post("/", json=body)
    assert response.status_code == 200
    assert text_of(sse_chunks(response.data)) == "Echo: now"
    assert objects(storage_client) == {}


def test_when_the_bucket_cannot_be_reached_nothing_is_written(
    make_app: Callable[..., Flask], db: Any, standin: Any
) -> None:
    client = make_app(FILES_BUCKET="no-such-bucket").test_client()
    response = client.post("/", json=with_files("x", "m1", attach(PNG)))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    # The model was asked beside the upload (it reads its own inline copy): its answer went
    # nowhere, and nothing names a file that is not there.
    assert all_docs(db) == []
    assert len(standin.model_requests()) <= 1
    # Text alone never touches the bucket.
    assert client.post("/", json=chat_body("plain", "m2")).status_code == 200


# --- Re-sends, edits, regenerates, deletes --------------------------------------------------------


def test_a_re_send_changes_nothing_anywhere(
    client: Any, db: Any, storage_client: Any, standin: Any
) -> None:
    body = with_files("wall", "m1", attach(PNG), attach(PDF, "application/pdf", "n.pdf"))
    first = client.post("/", json=body)
    before = {name: (b.generation, b.updated) for name, b in objects(storage_client).items()}
    user_before = doc(db, "m1")
    again = client.post("/", json=body)
    assert text_of(sse_chunks(again.data)) == text_of(sse_chunks(first.data))
    after = {name: (b.generation, b.updated) for name, b in objects(storage_client).items()}
    assert after == before and len(after) == 2
    assert doc(db, "m1") == user_before
    assert len(standin.model_requests()) == 1  # the stored reply is replayed


def settled(storage_client: Any, expected: list[str]) -> list[str]:
    """The bucket's objects once the clean-up an edit or regenerate starts after its commit
    (in the background) has run; at most a few seconds."""
    deadline = time.monotonic() + 10
    while (names := sorted(objects(storage_client))) != sorted(expected):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return names


def test_an_edit_replaces_the_messages_files(
    client: Any, db: Any, storage_client: Any, standin: Any
) -> None:
    first = with_files("wall", "m1", attach(PNG), attach(TEXT, "text/plain", "t.txt"))
    assert client.post("/", json=first).data
    edit = {
        **with_files("wall, better photo", "m1", attach(JPEG, "image/jpeg", "b.jpg")),
        "messageId": "m1",
    }
    response = client.post("/", json=edit)
    assert text_of(sse_chunks(response.data)) == (
        f"Echo: wall, better photo {seen(JPEG, 'image/jpeg')}"
    )
    # A new content gets a new name, so the old objects stay whole until the edit commits.
    assert settled(storage_client, [obj("m1", 0, JPEG)]) == [obj("m1", 0, JPEG)]
    files = [p for p in doc(db, "m1")["parts"] if p["type"] == "file"]
    assert [(f["n"], f["filename"], f["path"]) for f in files] == [(0, "b.jpg", obj("m1", 0, JPEG))]
    served = client.get("/sessions/s1/steps/empathize/files/m1/0")
    assert served.data == JPEG and served.headers["Content-Type"] == "image/jpeg"


def test_an_edit_of_the_text_that_keeps_a_file_keeps_its_object(
    client: Any, db: Any, storage_client: Any
) -> None:
    assert client.post(
        "/", json=with_files("wall", "m1", attach(PNG), attach(PDF, "application/pdf", "p.pdf"))
    ).data
    before = {name: b.generation for name, b in objects(storage_client).items()}
    edit = {**with_files("the wall, again", "m1", attach(PNG)), "messageId": "m1"}
    assert client.post("/", json=edit).data
    assert settled(storage_client, [obj("m1", 0, PNG)]) == [obj("m1", 0, PNG)]
    assert objects(storage_client)[obj("m1", 0, PNG)].generation == before[obj("m1", 0, PNG)]


def test_an_edit_that_drops_the_files_deletes_them(
    client: Any, db: Any, storage_client: Any
) -> None:
    assert client.post("/", json=with_files("wall", "m1", attach(PNG))).data
    assert client.post("/", json={**chat_body("no photo after all", "m1"), "messageId": "m1"}).data
    assert settled(storage_client, []) == []
    assert doc(db, "m1")["parts"] == [{"type": "text", "text": "no photo after all"}]


def test_an_edit_or_regenerate_deletes_the_later_messages_files(
    client: Any, db: Any, storage_client: Any, standin: Any
) -> None:
    assert client.post("/", json=with_files("one", "m1", attach(PNG))).data
    two = with_files("two", "m2", attach(PDF, "application/pdf", "p.pdf"))
    assert client.post("/", json=two).data
    three = with_files("three", "m3", attach(TEXT, "text/plain", "t.txt"))
    assert client.post("/", json=three).data
    assert len(objects(storage_client)) == 3
    regenerate = {
        **chat_body("two", "m2"),
        "trigger": "regenerate-message",
        "messageId": "m2~reply",
    }
    # As the demo sends it: the stored message's file named, its bytes left behind.
    regenerate["messages"][-1]["parts"].append(
        {"type": "file", "mediaType": "application/pdf", "filename": "p.pdf"}
    )
    assert sse_chunks(client.post("/", json=regenerate).data)[-1] == "[DONE]"
    kept = [obj("m1", 0, PNG), obj("m2", 0, PDF)]
    assert settled(storage_client, kept) == sorted(kept)
    assert doc(db, "m3") is None
    # The regenerated reply saw m2's file again, and m1's from the history.
    request = standin.model_requests()[-1]
    kinds = [[next(iter(p)) for p in parts] for parts in user_parts(request)]
    assert kinds == [["text", "inlineData"], ["text", "inlineData"]]
    edit = {**chat_body("ONE", "m1"), "messageId": "m1"}
    assert client.post("/", json=edit).data
    assert settled(storage_client, []) == []
    assert doc(db, "m2") is None


def test_deleting_the_session_deletes_its_objects(client: Any, storage_client: Any) -> None:
    assert client.post("/", json=with_files("one", "m1", attach(PNG))).data
    assert client.post("/", json=with_files("idea", "i1", attach(PNG), step="ideate")).data
    assert client.post("/", json=with_files("other", "m1", attach(PNG), session="s2")).data
    assert len(objects(storage_client)) == 3
    assert client.delete("/sessions/s1").status_code == 200
    assert sorted(objects(storage_client)) == [obj("m1", 0, PNG, session="s2")]


@pytest.mark.parametrize("mode", ["new", "edit"])
def test_files_uploaded_while_another_instance_deletes_the_session_are_not_left_behind(
    make_app: Callable[..., Flask], db: Any, storage_client: Any, monkeypatch: Any, mode: str
) -> None:
    """The race a delete cannot see: another instance's delete has marked the session and
    deleted its objects when this turn's upload lands; its documents go after this turn's
    claim. The claim finds the session going, and the turn takes its objects with it."""
    here, other = make_app(), make_app().api  # type: ignore[attr-defined]
    client = here.test_client()
    assert client.post("/", json=with_files("one", "m1", attach(PNG))).data
    attachments = here.api.turns.attachments  # type: ignore[attr-defined]
    upload = attachments.upload

    def upload_mid_delete(new: Any, named: Any) -> None:
        # What the delete does before the documents go (chat/sessions.py `delete`).
        store = other.sessions.sessions
        assert store.mark_deleting(store.view("s1"), "s1")
        other.sessions.attachments.forget_session("s1")
        upload(new, named)

    monkeypatch.setattr(attachments, "upload", upload_mid_delete)
    body = (
        with_files("two", "m2", attach(JPEG, "image/jpeg", "b.jpg"))
        if mode == "new"
        else {**with_files("ONE", "m1", attach(JPEG, "image/jpeg", "b.jpg")), "messageId": "m1"}
    )
    response = client.post("/", json=body)
    other.sessions.sessions.delete_session("s1")  # the delete's last step
    assert response.status_code == 404
    assert objects(storage_client) == {}
    assert all_docs(db) == []


def test_a_delete_the_bucket_refused_is_finished_by_the_next_one(
    make_app: Callable[..., Flask], db: Any, storage_client: Any
) -> None:
    owner = make_app().test_client()
    assert owner.post("/", json=with_files("one", "m1", attach(PNG))).data
    broken = make_app(FILES_BUCKET="no-such-bucket").test_client()
    response = broken.delete("/sessions/s1")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "storage_unavailable"
    # Marked as going: it reads as gone, and no document names a deleted file.
    assert doc(db, "m1") is not None and len(objects(storage_client)) == 1
    assert owner.get("/sessions/s1/steps/empathize/messages").status_code == 404
    again = owner.delete("/sessions/s1")
    assert again.status_code == 200, again.data
    assert all_docs(db) == [] and objects(storage_client) == {}


# --- Earlier files in later turns -----------------------------------------------------------------


def test_earlier_files_go_again_while_they_fit_the_budget_newest_first(
    make_app: Callable[..., Flask], standin: Any
) -> None:
    client = make_app(
        MAX_FILE_BYTES="2048", MAX_FILES_BYTES="2048", HISTORY_MAX_FILE_BYTES="2048"
    ).test_client()
    old, new = PNG[:1500], JPEG[:4] + bytes(1496)
    assert client.post("/", json=with_files("first", "m1", attach(old, name="old.png"))).data
    assert client.post(
        "/", json=with_files("second", "m2", attach(new, "image/jpeg", "new.jpg"))
    ).data
    assert client.post("/", json=chat_body("third", "m3")).data
    second, third = standin.model_requests()[1:]
    note = {"text": "[old.png (image/png) was attached here.]"}
    assert user_parts(second) == [
        [{"text": "first"}, note],
        [
            {"text": "second"},
            {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(new).decode()}},
        ],
    ]
    assert user_parts(third) == [
        [{"text": "first"}, note],
        [
            {"text": "second"},
            {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(new).decode()}},
        ],
        [{"text": "third"}],
    ]


def test_an_earlier_file_that_cannot_be_read_becomes_a_note(
    make_app: Callable[..., Flask], storage_client: Any, standin: Any
) -> None:
    assert make_app().test_client().post("/", json=with_files("first", "m1", attach(PNG))).data
    storage_client.bucket(support.FILES_BUCKET).blob(obj("m1", 0, PNG)).delete()
    client = make_app().test_client()  # a new instance: nothing cached
    response = client.post("/", json=chat_body("second", "m2"))
    assert text_of(sse_chunks(response.data)) == "Echo: second"
    first = user_parts(standin.model_requests()[-1])[0]
    assert first == [{"text": "first"}, {"text": "[wall.png (image/png) was attached here.]"}]


def test_a_new_instance_reads_earlier_files_from_the_bucket(
    make_app: Callable[..., Flask], standin: Any
) -> None:
    assert make_app().test_client().post("/", json=with_files("first", "m1", attach(PNG))).data
    assert make_app().test_client().post("/", json=chat_body("second", "m2")).data
    first = user_parts(standin.model_requests()[-1])[0]
    assert first[1] == {
        "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}
    }


# --- Vertex AI: the model reads the objects itself ------------------------------------------------


def test_on_vertex_ai_files_go_as_cloud_storage_uris(
    db: Any, storage_client: Any, standin: Any, standin_service: support.Service
) -> None:
    env = {
        **{k: v for k, v in BASE_ENV.items() if k != "GEMINI_API_KEY"},
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_CLOUD_LOCATION": "europe-west4",
    }
    vertex = make_client(
        10,
        vertexai=True,
        project=support.PROJECT,
        location="europe-west4",
        credentials=Credentials(token="test-token"),
        base_url=standin_service.url,
    )
    api = build(Config.from_env(env), db=db, genai_client=vertex, storage_client=storage_client)
    app = Flask("vertex")
    app.add_url_rule("/", "root", lambda: api(request), methods=["POST"])
    client = app.test_client()
    assert client.post("/", json=with_files("first", "m1", attach(PNG))).data
    response = client.post(
        "/", json=with_files("second", "m2", attach(PDF, "application/pdf", "p.pdf"))
    )
    gs = f"gs://{support.FILES_BUCKET}/"
    png, pdf = gs + obj("m1", 0, PNG), gs + obj("m2", 0, PDF)
    assert text_of(sse_chunks(response.data)) == f"Echo: second [application/pdf at {pdf}]"
    sent = standin.model_requests()[-1]
    assert "/projects/demo-workshop-chat/locations/europe-west4/" in sent["path"]
    assert user_parts(sent) == [
        [{"text": "first"}, {"fileData": {"mimeType": "image/png", "fileUri": png}}],
        [{"text": "second"}, {"fileData": {"mimeType": "application/pdf", "fileUri": pdf}}],
    ]
    # The objects were there before the model was asked to read them.
    assert sorted(objects(storage_client)) == [obj("m1", 0, PNG), obj("m2", 0, PDF)]


def test_a_reply_taken_over_after_its_instance_died_sees_the_files(
    make_app: Callable[..., Flask], db: Any, standin: Any
) -> None:
    assert make_app().test_client().post("/", json=with_files("wall", "m1", attach(PNG))).data
    # As if the generating instance died a moment ago, mid-reply.
    db.document(f"{MESSAGES}/m1~reply").update({"status": "streaming", "parts": []})
    follower = make_app(LEASE_SECONDS="1", CHECKPOINT_SECONDS="0.2").test_client()
    resumed = follower.get("/sessions/s1/steps/empathize/stream")
    assert resumed.status_code == 200
    assert text_of(sse_chunks(resumed.data)) == f"Echo: wall {seen(PNG, 'image/png')}"
    first, again = standin.model_requests()
    assert user_parts(again) == user_parts(first)
    assert doc(db, "m1~reply")["status"] == "complete"
