"""Fixtures for the unit layer: an in-memory store and a scripted model, fresh each test, and
the core built around them with the configuration's own defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.fakes import MemoryBoard, MemoryStore, ScriptedModel
from tests.unit.support import DEFAULTS
from workshop_chat.chat.checkpoints import Cadence, Checkpointer
from workshop_chat.chat.generation import Limits
from workshop_chat.chat.generations import Generations, Stores
from workshop_chat.chat.outcomes import Workshop
from workshop_chat.chat.sessions import Sessions
from workshop_chat.chat.turns import Turns
from workshop_chat.service import settings as settings_of


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def board() -> MemoryBoard:
    return MemoryBoard()


@pytest.fixture
def make_chat(store: MemoryStore, model: ScriptedModel, board: MemoryBoard) -> Callable[..., Turns]:
    def make(limits: Limits | None = None, **overrides: Any) -> Turns:
        # Checkpoints and lease renewals happen when a test flushes, never on their own.
        checkpointer = Checkpointer(store, Cadence(3600.0, 36_000.0, final_attempts=3))
        options = {"keepalive_seconds": 5.0, "follow_seconds": 0.01, **overrides}
        settings = replace(settings_of(DEFAULTS), **options)
        if limits is not None:
            settings = replace(settings, limits=limits)
        generations = Generations(
            Stores(store, store, board=board),  # one fake: conversations and sessions
            model,
            Workshop(lambda step: f"prompt for {step}"),
            checkpointer,
            settings,
            clock=lambda: store.now,
        )
        return Turns(generations, store)

    return make


@pytest.fixture
def chat(make_chat: Callable[..., Turns]) -> Turns:
    return make_chat()


@pytest.fixture
def ops(chat: Turns, store: MemoryStore) -> Sessions:
    return Sessions(chat, Stores(store, store))
