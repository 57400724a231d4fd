"""Assembly: builds the clients once per process and wires them into the handler.

This is the one place that constructs Firestore, Gemini and Firebase Auth clients; everything
else receives them, so tests build the same graph around the emulator and the stand-in.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from typing import Any

from .chat.attachments import Attachments, FileSettings
from .chat.checkpoints import Cadence, Checkpointer
from .chat.generation import Limits
from .chat.generations import Generations, Settings, Stores
from .chat.outcomes import Summaries, SummaryCadence, Workshop
from .chat.prompts import PromptError, check_all, system_prompt
from .chat.prompts import thinking_budget as prompt_thinking_budget
from .chat.prompts import tools as prompt_tools
from .chat.sessions import Sessions
from .chat.telemetry import QUIET, Telemetry
from .chat.turns import Turns
from .config import Config, ConfigError
from .web.app import Api
from .web.auth import AppCheck, FirebaseAuth, NoAuth, Verifier
from .web.logs import setup

log = logging.getLogger("workshop_chat")


def build(
    config: Config, db: Any = None, genai_client: Any = None, storage_client: Any = None
) -> Api:
    from .cloud.gemini import Gemini, Generation, Retries, make_client
    from .firestore.access import FirestoreAccess
    from .firestore.board import BoardStore
    from .firestore.conversations import FirestoreStore
    from .firestore.ledger import Ledger
    from .firestore.outcomes import OutcomeStore
    from .firestore.replies import ReplyWriter
    from .firestore.sessions import SessionStore

    if db is None:
        from google.cloud import firestore

        db = firestore.Client(project=config.project)
    if genai_client is None:
        genai_client = make_client(config.max_concurrent_streams)
    model = Gemini(
        genai_client,
        config.model,
        generation=Generation(
            temperature=config.temperature,
            max_output_tokens=config.max_output_tokens,
            thinking_budget=config.thinking_budget,
            include_thoughts=config.include_thoughts,
            google_search=config.google_search,
            safety_threshold=config.safety_threshold,
        ),
        retries=Retries(
            config.retry_attempts,
            config.retry_initial_delay_seconds,
            config.retry_max_wait_seconds,
        ),
        summary_model=config.summary_model,
    )
    ledger = Ledger(db, config.user_daily_tokens, config.daily_tokens)
    access = FirestoreAccess(db, lease_seconds=config.lease_seconds, ledger=ledger)
    telemetry = telemetry_of(config)
    checkpointer = Checkpointer(ReplyWriter(access), cadence(config), telemetry)
    summaries = Summaries(
        OutcomeStore(access),
        model.summarize,
        summary_cadence(config),
        telemetry,
        config.summary_model,
    )
    workshop = Workshop(system_prompt, summaries, prompt_thinking_budget, prompt_tools)
    stores = Stores(
        FirestoreStore(access),
        SessionStore(access),
        _attachments(config, storage_client),
        ledger if ledger.on else None,
        BoardStore(access) if config.max_tool_rounds else None,
    )
    generations = Generations(
        stores, model, workshop, checkpointer, settings(config), telemetry=telemetry
    )
    turns = Turns(generations, stores.sessions)
    verifier: Verifier = (
        NoAuth()
        if config.auth_mode == "none"
        else FirebaseAuth(config.project, config.anonymous_users == "allow")
    )
    app_check = AppCheck(config.project, config.app_check)
    return Api(config, turns, Sessions(turns, stores), verifier, app_check)


def settings(config: Config) -> Settings:
    """What a turn needs to know of the configuration (the unit tests build theirs here too)."""
    return Settings(
        history_max_chars=config.history_max_chars,
        rate_limit_per_minute=config.rate_limit_per_minute,
        session_rate_limit_per_minute=config.session_rate_limit_per_minute,
        keepalive_seconds=config.keepalive_seconds,
        follow_seconds=config.checkpoint_seconds,
        max_queued=config.max_queued_per_step,
        lease_seconds=config.lease_seconds,
        limits=Limits(
            config.stall_seconds,
            config.reply_timeout_seconds,
            config.max_reply_bytes,
            config.max_tool_rounds,
        ),
    )


def telemetry_of(config: Config) -> Telemetry:
    """OpenTelemetry when an exporter is configured; otherwise nothing is built or loaded."""
    if not (config.traces_exporters or config.metrics_exporters):
        return QUIET
    from .cloud.telemetry import build as build_telemetry

    try:
        return build_telemetry(config)
    except Exception as error:  # noqa: BLE001 - no credentials, say: the chat still runs
        log.error(
            "telemetry could not start; running without it",
            extra={"fields": {"errorType": type(error).__name__}},
        )
        return QUIET


def cadence(config: Config) -> Cadence:
    return Cadence(config.checkpoint_seconds, config.lease_seconds)


def summary_cadence(config: Config) -> SummaryCadence:
    return SummaryCadence(
        config.summary_quiet_seconds,
        config.summary_max_wait_seconds,
        config.summary_max_chars,
        config.history_max_chars,
    )


def _attachments(config: Config, client: Any) -> Attachments:
    """Files go to FILES_BUCKET; the client makes no request until a file comes."""
    from .cloud.storage import FileStore, make_client

    files = FileStore(client or (lambda: make_client(config.project)), config.files_bucket)
    vertex_bucket = config.files_bucket if config.uses_vertex else None
    return Attachments(files, FileSettings(config.history_max_file_bytes, vertex_bucket))


def build_from_env() -> Api:
    """Validate the environment at start-up: one log line per problem, then refuse to start."""
    try:
        config = Config.from_env()
        check_all()
    except ConfigError as error:
        setup()
        for problem in error.problems:
            log.critical(f"configuration: {problem}")
        sys.exit(3)
    except PromptError as error:
        setup()
        log.critical(f"configuration: {error}")
        sys.exit(3)
    setup(config.log_level)
    if config.auth_mode == "none":
        log.warning(
            "AUTH_MODE=none: every caller is the same user and anyone can read any session. "
            "Never deploy this way."
        )
    from .cloud.gemini import combines_tools

    if config.google_search and config.max_tool_rounds and not combines_tools(config.model):
        log.warning(
            f"GEMINI_GOOGLE_SEARCH with {config.model}: the board's tools are off (models before "
            "Gemini 3 take search or functions in a request, not both)"
        )
    api = build(config)
    _checkpoint_on_sigterm(api.turns)
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
    # Everything built so far lives as long as the process: take it out of the collector's
    # reach. Otherwise each full collection walks ~140k start-up objects and stops every
    # stream for 50-100 ms (bench.sh: relay and first-chunk p99); gunicorn's worker inherits
    # the frozen heap when it forks.
    gc.freeze()
    return api


def _checkpoint_on_sigterm(turns: Turns) -> None:
    """Cloud Run sends SIGTERM ~10 s before the kill: save what replies in flight have so far.

    functions-framework builds the app in gunicorn's master, and each worker then installs its
    own SIGTERM handler, so a handler set here would never run in the process that streams.
    Wrapping the workers' handler is the one hook gunicorn offers for this. Without gunicorn
    (the Flask dev server), a plain signal handler does the same.
    """

    def checkpoint() -> None:
        saved = turns.checkpoint_all()
        log.warning("SIGTERM: replies in flight checkpointed", extra={"fields": {"count": saved}})

    try:
        from gunicorn.workers.base import Worker
        from gunicorn.workers.gthread import ThreadWorker
    except ImportError:  # pragma: no cover - gunicorn ships with functions-framework
        workers: tuple[type, ...] = ()
    else:
        workers = (Worker, ThreadWorker)
    for worker in workers:
        graceful_exit = worker.__dict__.get("handle_exit")
        if graceful_exit is None or getattr(graceful_exit, "_checkpoints", False):
            continue

        def handle_exit(self: Any, signum: int, frame: Any, _exit: Any = graceful_exit) -> None:
            threading.Thread(target=checkpoint, name="sigterm-checkpoint").start()
            _exit(self, signum, frame)

        handle_exit._checkpoints = True  # type: ignore[attr-defined]
        worker.handle_exit = handle_exit  # type: ignore[attr-defined]

    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            checkpoint()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(0)

        signal.signal(signal.SIGTERM, on_term)
