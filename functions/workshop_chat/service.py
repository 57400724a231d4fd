"""Assembly: builds the clients once per process and wires them into the handler.

This is the one place that constructs Firestore, Gemini and Firebase Auth clients; everything
else receives them, so tests build the same graph around the emulator and the stand-in.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from typing import Any

from .auth import FirebaseAuth, NoAuth, Verifier
from .config import Config, ConfigError
from .http import Api
from .logs import setup
from .prompts import system_prompt
from .turn import Chat

log = logging.getLogger("workshop_chat")


def build(config: Config, db: Any = None, genai_client: Any = None) -> Api:
    from .model import Gemini, make_client
    from .store import FirestoreStore

    if db is None:
        from google.cloud import firestore

        db = firestore.Client(project=config.project)
    if genai_client is None:
        genai_client = make_client(config.max_concurrent_streams, config.reply_timeout_seconds)
    model = Gemini(
        genai_client,
        config.model,
        temperature=config.temperature,
        max_output_tokens=config.max_output_tokens,
        attempts=config.retry_attempts,
        initial_delay=config.retry_initial_delay_seconds,
        max_wait=config.retry_max_wait_seconds,
    )
    chat = Chat(
        FirestoreStore(db),
        model,
        system_prompt,
        history_max_chars=config.history_max_chars,
        max_reply_bytes=config.max_reply_bytes,
        rate_limit_per_minute=config.rate_limit_per_minute,
        keepalive_seconds=config.keepalive_seconds,
        checkpoint_seconds=config.checkpoint_seconds,
        stall_seconds=config.stall_seconds,
        interrupted_after_seconds=config.interrupted_after_seconds,
    )
    verifier: Verifier = NoAuth() if config.auth_mode == "none" else FirebaseAuth(config.project)
    return Api(config, chat, verifier)


def build_from_env() -> Api:
    """Validate the environment at start-up: one log line per problem, then refuse to start."""
    try:
        config = Config.from_env()
    except ConfigError as error:
        setup()
        for problem in error.problems:
            log.critical(f"configuration: {problem}")
        sys.exit(3)
    setup(config.log_level)
    if config.auth_mode == "none":
        log.warning(
            "AUTH_MODE=none: every caller is the same user and anyone can read any session. "
            "Never deploy this way."
        )
    api = build(config)
    _checkpoint_on_sigterm(api.chat)
    log.info(
        "workshop-chat ready",
        extra={
            "fields": {
                "model": config.model,
                "authMode": config.auth_mode,
                "project": config.project,
            }
        },
    )
    return api


def _checkpoint_on_sigterm(chat: Chat) -> None:
    """Cloud Run sends SIGTERM ~10 s before the kill: save what replies in flight have so far."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread
        return

    def on_term(signum: int, frame: Any) -> None:
        saved = chat.checkpoint_all()
        log.warning("SIGTERM: replies in flight checkpointed", extra={"fields": {"count": saved}})
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_term)
