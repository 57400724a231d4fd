"""Fixtures: the real Firestore and Cloud Storage emulators and the Gemini stand-in, fresh data
for every test."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from google import genai

from tests import support

os.environ.setdefault("GOOGLE_CLOUD_PROJECT", support.PROJECT)


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    service = support.start_firestore_emulator()
    os.environ["FIRESTORE_EMULATOR_HOST"] = service.url
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def storage_emulator() -> Iterator[str]:
    """The Cloud Storage emulator with support.FILES_BUCKET; google-cloud-storage clients made
    after this point use it (STORAGE_EMULATOR_HOST is the library's own variable)."""
    service = support.start_storage_emulator()
    os.environ["STORAGE_EMULATOR_HOST"] = service.url
    yield service.url
    service.stop()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)


@pytest.fixture
def storage_client(storage_emulator: str) -> Any:
    """A google-cloud-storage client on the emulator, with every object of the last test gone."""
    from workshop_chat.cloud.storage import make_client

    support.reset_storage(storage_emulator)
    return make_client(support.PROJECT)


@pytest.fixture(scope="session")
def standin_service() -> Iterator[support.Service]:
    service = support.start_standin()
    yield service
    service.stop()


class Standin:
    """The stand-in's control API: knobs, queued faults and what it was asked."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw.startswith(b"{") else raw

    def reset(self) -> None:
        self._call("DELETE", "/_standin/requests")

    def configure(self, **knobs: Any) -> None:
        self._call("POST", "/_standin/config", knobs)

    def fail_next(self, *statuses: int, retry_after: int | None = None) -> None:
        body: dict[str, Any] = {"statuses": list(statuses)}
        if retry_after is not None:
            body["retry_after"] = retry_after
        self._call("POST", "/_standin/fail_next", body)

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_standin/requests")["requests"]

    def model_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if ":streamGenerateContent" in r["path"]]


@pytest.fixture
def standin(standin_service: support.Service) -> Standin:
    control = Standin(standin_service.url)
    control.reset()
    return control


@pytest.fixture
def db(emulator: str) -> Any:
    from google.cloud import firestore

    support.reset_firestore(emulator)
    return firestore.Client(project=support.PROJECT)


@pytest.fixture(scope="session")
def genai_client(standin_service: support.Service) -> genai.Client:
    """One client for the session: building one costs ~0.3 s, and it holds no test state."""
    from workshop_chat.cloud.gemini import make_client

    return make_client(100, api_key="test-key", base_url=standin_service.url)


@pytest.fixture
def make_app(
    db: Any, genai_client: genai.Client, standin: Standin, storage_client: Any
) -> Iterator[Callable[..., Flask]]:
    """A Flask app that hands every path to the handler, as functions-framework does.

    Fresh Firestore data and a reset stand-in for every test.
    """
    from workshop_chat.config import Config
    from workshop_chat.service import build

    built = []

    def make(**env: str) -> Flask:
        config = Config.from_env({**support.BASE_ENV, **env})
        api = build(config, db=db, genai_client=genai_client, storage_client=storage_client)
        built.append(api)
        app = Flask("workshop-chat-test")
        app.api = api  # type: ignore[attr-defined]

        def route(path: str = "") -> Any:
            from flask import request

            return api(request)

        methods = ["GET", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"]
        app.add_url_rule("/", "root", route, methods=methods)
        app.add_url_rule("/<path:path>", "path", route, methods=methods)
        return app

    yield make
    for api in built:  # a summary due later would write into the next test's empty store
        summaries = api.turns.generations.workshop.summaries
        if summaries is not None:
            summaries.close()


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> Any:
    return make_app().test_client()


@pytest.fixture(scope="module")
def live_function(
    emulator: str, standin_service: support.Service, storage_emulator: str
) -> Iterator[support.Service]:
    """The function as production runs it (functions-framework, gunicorn) on a free port."""
    env = support.function_env(emulator, standin_service, storage_emulator, THREADS="64")
    service = support.start_function(env)
    yield service
    service.stop()
