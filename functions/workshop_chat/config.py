"""Every environment read of the function, validated once at start-up.

Reading the environment in one place means a misconfigured deployment fails at boot with one
line per problem, instead of on the first unlucky request. Each default is written once, on
`Config`'s field; the tables below say only which variable sets a field and its allowed range.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .chat.attachments import DEFAULT_TYPES, FILE_PART_ROOM, MIB, FileLimits

# Gemini's thresholds for the four harm categories (google-genai's HarmBlockThreshold names).
SAFETY_THRESHOLDS = (
    "BLOCK_NONE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_LOW_AND_ABOVE",
    "OFF",
)
AuthMode = Literal["firebase", "none"]
AppCheckMode = Literal["off", "monitor", "enforce"]
AnonymousUsers = Literal["allow", "deny"]
TracesExporter = Literal["console", "otlp", "gcp_trace"]
MetricsExporter = Literal["console", "otlp", "gcp_monitoring"]
_TRACES_EXPORTERS: tuple[TracesExporter, ...] = ("console", "otlp", "gcp_trace")
_METRICS_EXPORTERS: tuple[MetricsExporter, ...] = ("console", "otlp", "gcp_monitoring")
# Instrumentation libraries' switches for recording prompts and replies in spans: this service
# records no content, and a deployed one refuses to start with any of them on.
_CONTENT_CAPTURE = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "OTEL_INSTRUMENTATION_GOOGLE_GENAI_CAPTURE_MESSAGE_CONTENT",
)


class ConfigError(ValueError):
    """Raised with every problem found, one per line, so an operator fixes them in one go."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"- {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    project: str
    model: str = "gemini-2.5-flash"
    temperature: float | None = None
    max_output_tokens: int = 8192
    allowed_origins: tuple[str, ...] = ()
    auth_mode: AuthMode = "firebase"
    auth_emulator: bool = False
    deployed: bool = False
    # Limits on what a client may send.
    max_request_bytes: int = 256 * 1024
    max_message_chars: int = 16_000
    max_parts: int = 32
    max_id_chars: int = 128
    # How much stored conversation the model sees, newest first, in characters.
    history_max_chars: int = 200_000
    # Firestore documents are capped at 1 MiB; stop a reply well before that.
    max_reply_bytes: int = 900_000
    # Model rounds of board tool calls in one reply (0: no board tools).
    max_tool_rounds: int = 4
    rate_limit_per_minute: int = 30
    # Turns a minute in one session, whoever sends them (0: no bound): a team's bound.
    session_rate_limit_per_minute: int = 60
    # Replies waiting their turn in one step behind the one generating: past it, 429 step_busy.
    max_queued_per_step: int = 4
    # Request bytes a process reads and decodes at once (web/admission.py): reading, parsing
    # and decoding cost about three times a body, so 32 MiB keeps two workers of a 1 GiB
    # instance within it whatever arrives. One user may hold one largest request at a time.
    max_inflight_bytes: int = 32 * MIB
    # Gemini tokens (prompt, output, thinking; replies and the summaries they cause) a UTC
    # day: one user's, and the whole project's (0: no limit). About 100 long turns a user,
    # and a bill a small team can see coming.
    user_daily_tokens: int = 2_000_000
    daily_tokens: int = 20_000_000
    # Streaming behaviour.
    keepalive_seconds: float = 10.0
    checkpoint_seconds: float = 1.0
    stall_seconds: float = 60.0
    reply_timeout_seconds: float = 600.0
    # A generation renews its claim about four times per lease; a lease not renewed for this
    # long means its instance died, and the reply may be taken over.
    lease_seconds: float = 8.0
    # Retries before the first byte of a reply reaches anyone.
    retry_attempts: int = 4
    retry_max_wait_seconds: float = 20.0
    retry_initial_delay_seconds: float = 0.5
    # Concurrency: the Gemini connection pool must hold as many streams as the instance serves.
    max_concurrent_streams: int = 1000
    log_level: str = "INFO"
    # Step outcomes: a lighter model, and a length budget for each summary. A step's outcome
    # is refreshed once it has been quiet this long after a reply, and at least this often
    # while it never goes quiet.
    summary_model: str = "gemini-2.5-flash-lite"
    summary_max_chars: int = 2000
    summary_quiet_seconds: float = 10.0
    summary_max_wait_seconds: float = 600.0
    # Gemini's thinking, grounding and safety; None leaves Gemini's default.
    thinking_budget: int | None = None
    include_thoughts: bool = False
    google_search: bool = False
    safety_threshold: str | None = None
    # Firebase App Check on every route that reads or writes a session.
    app_check: AppCheckMode = "off"
    anonymous_users: AnonymousUsers = "deny"  # unset: "allow" when App Check is enforced
    # Files in the conversation: where their bytes go, what a message may carry, and how many
    # bytes of earlier files later turns still send (Gemini takes 20 MB of inline data; 12 MiB
    # is 16 MiB in base64, which with the text stays under it).
    files_bucket: str = ""
    file_limits: FileLimits = field(default_factory=FileLimits)
    history_max_file_bytes: int = 12 * MIB
    uses_vertex: bool = False
    # OpenTelemetry: where spans and metrics go (none: nothing is built). The SDK reads the
    # rest of its OTEL_* variables (endpoint, sampler, export interval) itself.
    traces_exporters: tuple[TracesExporter, ...] = ()
    metrics_exporters: tuple[MetricsExporter, ...] = ()
    service_name: str = "workshop-chat"

    @property
    def max_request_bytes_with_files(self) -> int:
        """The most any request may be: the largest files a message may carry, in base64 (a
        third more), with their JSON."""
        limits = self.file_limits
        base64 = -(-limits.max_total_bytes * 4 // 3)
        return self.max_request_bytes + base64 + limits.max_files * FILE_PART_ROOM

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build and validate; every problem is collected before raising."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values = _read(env, problems)
        config = cls(**values)
        problems += _check(config, env)
        if problems:
            raise ConfigError(problems)
        return config


_DEFAULTS: dict[str, Any] = {
    f.name: f.default_factory() if callable(f.default_factory) else f.default
    for f in fields(Config)
    if f.name != "project"
}

# field: (variable, lowest, highest)
_INTEGERS = {
    "max_output_tokens": ("GEMINI_MAX_OUTPUT_TOKENS", 1, 65_536),
    "max_request_bytes": ("MAX_REQUEST_BYTES", 1024, 32 << 20),
    # 200,000 characters of 4-byte UTF-8 still fit one 1 MiB Firestore document.
    "max_message_chars": ("MAX_MESSAGE_CHARS", 1, 200_000),
    "max_parts": ("MAX_PARTS", 1, 1000),
    "history_max_chars": ("HISTORY_MAX_CHARS", 1000, 4_000_000),
    "max_reply_bytes": ("MAX_REPLY_BYTES", 1000, 1_000_000),
    "max_tool_rounds": ("MAX_TOOL_ROUNDS", 0, 10),
    "rate_limit_per_minute": ("RATE_LIMIT_PER_MINUTE", 0, 100_000),
    "session_rate_limit_per_minute": ("SESSION_RATE_LIMIT_PER_MINUTE", 0, 100_000),
    "max_queued_per_step": ("MAX_QUEUED_PER_STEP", 0, 100),
    "user_daily_tokens": ("USER_DAILY_TOKENS", 0, 10**12),
    "max_inflight_bytes": ("MAX_INFLIGHT_BYTES", 1 * MIB, 1 << 30),
    "daily_tokens": ("DAILY_TOKENS", 0, 10**13),
    "retry_attempts": ("GEMINI_RETRY_ATTEMPTS", 1, 10),
    "max_concurrent_streams": ("THREADS", 1, 10_000),
    "summary_max_chars": ("SUMMARY_MAX_CHARS", 200, 20_000),
    "history_max_file_bytes": ("HISTORY_MAX_FILE_BYTES", 0, 12 * MIB),
}
_NUMBERS = {
    "keepalive_seconds": ("KEEPALIVE_SECONDS", 0.05, 60.0),
    "checkpoint_seconds": ("CHECKPOINT_SECONDS", 0.05, 60.0),
    "stall_seconds": ("STALL_SECONDS", 0.1, 3600.0),
    "reply_timeout_seconds": ("REPLY_TIMEOUT_SECONDS", 1.0, 3600.0),
    "lease_seconds": ("LEASE_SECONDS", 1.0, 600.0),
    "retry_max_wait_seconds": ("GEMINI_RETRY_MAX_WAIT_SECONDS", 0.0, 300.0),
    "retry_initial_delay_seconds": ("GEMINI_RETRY_INITIAL_DELAY_SECONDS", 0.0, 60.0),
    "summary_quiet_seconds": ("SUMMARY_DELAY_SECONDS", 0.0, 3600.0),
    "summary_max_wait_seconds": ("SUMMARY_MAX_WAIT_SECONDS", 1.0, 86_400.0),
}
_FILE_LIMITS = {
    "max_files": ("MAX_FILES", 0, 16),
    "max_file_bytes": ("MAX_FILE_BYTES", 1024, 10 * MIB),
    "max_total_bytes": ("MAX_FILES_BYTES", 1024, 12 * MIB),
}
_FLAGS = {
    "include_thoughts": "GEMINI_INCLUDE_THOUGHTS",
    "google_search": "GEMINI_GOOGLE_SEARCH",
}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def _read(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    reader = _Reader(env, problems)
    project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or env.get("GCP_PROJECT")
    if not project:
        problems.append("GOOGLE_CLOUD_PROJECT is not set (use a demo-* id locally)")
    values: dict[str, Any] = {"project": project or ""}
    for name, (variable, low, high) in _INTEGERS.items():
        values[name] = reader.integer(variable, _DEFAULTS[name], low, high)
    for name, (variable, low_f, high_f) in _NUMBERS.items():
        values[name] = reader.number(variable, _DEFAULTS[name], low_f, high_f)
    for name, variable in _FLAGS.items():
        values[name] = reader.boolean(variable)
    limits: FileLimits = _DEFAULTS["file_limits"]
    values["file_limits"] = FileLimits(
        **{
            name: reader.integer(variable, getattr(limits, name), low, high)
            for name, (variable, low, high) in _FILE_LIMITS.items()
        },
        allowed_types=_types(env.get("ALLOWED_FILE_TYPES"), problems),
    )
    values["model"] = env.get("GEMINI_MODEL", "").strip() or _DEFAULTS["model"]
    values["summary_model"] = env.get("SUMMARY_MODEL", "").strip() or _DEFAULTS["summary_model"]
    values["temperature"] = reader.number("GEMINI_TEMPERATURE", None, 0.0, 2.0)
    values["thinking_budget"] = reader.optional_integer("GEMINI_THINKING_BUDGET", -1, 32_768)
    values["safety_threshold"] = reader.choice("GEMINI_SAFETY_THRESHOLD", SAFETY_THRESHOLDS)
    values["app_check"] = (
        reader.choice("APP_CHECK", ("off", "monitor", "enforce"), lower=True)
        or _DEFAULTS["app_check"]
    )
    # Unset or empty means firebase: a blank value in a template must not open the door.
    auth_mode = (env.get("AUTH_MODE") or "").strip().lower() or _DEFAULTS["auth_mode"]
    if auth_mode not in ("firebase", "none"):
        problems.append(f"AUTH_MODE must be 'firebase' or 'none', not {auth_mode!r}")
        auth_mode = _DEFAULTS["auth_mode"]
    values["auth_mode"] = auth_mode
    # Anonymous accounts cost a script nothing to make: let them chat only where App Check
    # shows the caller is the app.
    values["anonymous_users"] = reader.choice("ANONYMOUS_USERS", ("allow", "deny"), lower=True) or (
        "allow" if values["app_check"] == "enforce" else "deny"
    )
    values["auth_emulator"] = bool(env.get("FIREBASE_AUTH_EMULATOR_HOST"))
    values["deployed"] = bool(env.get("K_SERVICE"))
    values["uses_vertex"] = env.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true", "yes")
    values["allowed_origins"] = tuple(
        o.strip().rstrip("/") for o in env.get("ALLOWED_ORIGINS", "").split(",") if o.strip()
    )
    values["log_level"] = env.get("LOG_LEVEL", _DEFAULTS["log_level"]).upper()
    values["files_bucket"] = (env.get("FILES_BUCKET") or "").strip() or (
        f"{project}.firebasestorage.app" if project else ""
    )
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() != "true":
        values["traces_exporters"] = _exporters(
            env, "OTEL_TRACES_EXPORTER", _TRACES_EXPORTERS, problems
        )
        values["metrics_exporters"] = _exporters(
            env, "OTEL_METRICS_EXPORTER", _METRICS_EXPORTERS, problems
        )
    values["service_name"] = (env.get("OTEL_SERVICE_NAME") or "").strip() or _DEFAULTS[
        "service_name"
    ]
    return values


def _exporters(
    env: Mapping[str, str], variable: str, allowed: tuple[Any, ...], problems: list[str]
) -> tuple[Any, ...]:
    """A comma-separated list of exporter names; `none` (the default) is none of them."""
    names = [n.strip().lower() for n in (env.get(variable) or "").split(",") if n.strip()]
    found = []
    for name in names:
        if name in allowed:
            found.append(name)
        elif name != "none":
            problems.append(f"{variable}={name} is not one of none, {', '.join(allowed)}")
    return tuple(dict.fromkeys(found))


# Where a local stack points the Google clients: never on a deployed function.
_LOCAL_ONLY = (
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
)


def _check(config: Config, env: Mapping[str, str]) -> list[str]:
    """What only makes sense of settings together."""
    problems = []
    if config.deployed and config.auth_mode == "none":
        problems.append(
            "AUTH_MODE=none on a deployed function would let anyone read any session; "
            "it is for local experiments only"
        )
    if config.deployed and config.auth_emulator:
        problems.append(
            "FIREBASE_AUTH_EMULATOR_HOST is set on a deployed function: it would accept "
            "unsigned tokens; remove it"
        )
    for name in _LOCAL_ONLY:
        if config.deployed and env.get(name):
            problems.append(
                f"{name} is set on a deployed function: it sends data to a local stand-in "
                "instead of the real service; remove it"
            )
    has_key = bool(env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY"))
    if not config.uses_vertex and not has_key:
        problems.append(
            "no Gemini credentials: set GEMINI_API_KEY, or GOOGLE_GENAI_USE_VERTEXAI=true "
            "with GOOGLE_CLOUD_LOCATION"
        )
    if config.uses_vertex and not env.get("GOOGLE_CLOUD_LOCATION"):
        problems.append("GOOGLE_GENAI_USE_VERTEXAI=true needs GOOGLE_CLOUD_LOCATION")
    for origin in config.allowed_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            problems.append(f"ALLOWED_ORIGINS entry {origin!r} must start with http(s)://")
    if config.files_bucket and not _BUCKET.fullmatch(config.files_bucket):
        problems.append("FILES_BUCKET must be a bucket name (lower case, no gs://)")
    if config.max_request_bytes_with_files > 32 * MIB:
        problems.append("MAX_REQUEST_BYTES and MAX_FILES_BYTES together exceed 32 MiB")
    if config.max_inflight_bytes < config.max_request_bytes_with_files:
        problems.append("MAX_INFLIGHT_BYTES must hold one request of the largest size")
    if config.file_limits.max_total_bytes > config.history_max_file_bytes:
        problems.append("HISTORY_MAX_FILE_BYTES must hold at least one message's files")
    for name in _CONTENT_CAPTURE:
        if config.deployed and (env.get(name) or "").strip().lower() not in ("", "false"):
            problems.append(
                f"{name} is set on a deployed function: no prompt or reply goes into a span "
                "or a metric here; remove it"
            )
    if config.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    return problems


def _types(raw: str | None, problems: list[str]) -> tuple[str, ...]:
    if not raw or not raw.strip():
        return DEFAULT_TYPES
    types = tuple(t.strip().lower() for t in raw.split(",") if t.strip())
    for media_type in types:
        if "/" not in media_type or " " in media_type:
            problems.append(f"ALLOWED_FILE_TYPES entry {media_type!r} is not a media type")
    return types


class _Reader:
    """Parses numbers with ranges, recording problems instead of raising on the first."""

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self.env = env
        self.problems = problems

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, not {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, not {value}")
            return default  # so the checks that combine settings report nothing twice
        return value

    def optional_integer(self, name: str, low: int, high: int) -> int | None:
        if self._raw(name) is None:
            return None
        return self.integer(name, 0, low, high)

    def boolean(self, name: str) -> bool:
        raw = (self._raw(name) or "false").lower()
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            self.problems.append(f"{name} must be true or false, not {raw!r}")
        return raw in ("true", "1", "yes")

    def choice(self, name: str, allowed: tuple[str, ...], lower: bool = False) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        value = raw.lower() if lower else raw.upper()
        if value not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
            return None
        return value

    def number(self, name: str, default: float | None, low: float, high: float) -> float | None:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, not {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, not {value}")
            return default  # so the checks that combine settings report nothing twice
        return value
