"""Configuration: defaults, ranges, and one clear line per problem."""

from __future__ import annotations

import pytest

from workshop_chat.config import Config, ConfigError

MINIMAL = {"GOOGLE_CLOUD_PROJECT": "demo-x", "GEMINI_API_KEY": "k"}


def test_defaults_are_production_safe():
    config = Config.from_env(MINIMAL)
    assert config.auth_mode == "firebase"
    assert config.model == "gemini-2.5-flash"
    assert config.allowed_origins == ()
    assert config.max_reply_bytes < 1024 * 1024
    assert config.rate_limit_per_minute > 0


def test_vertex_ai_needs_no_key_but_a_location():
    env = {
        "GOOGLE_CLOUD_PROJECT": "p",
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_CLOUD_LOCATION": "global",
    }
    assert Config.from_env(env).project == "p"


def test_every_problem_is_reported_at_once_one_line_each():
    with pytest.raises(ConfigError) as error:
        Config.from_env(
            {
                "AUTH_MODE": "maybe",
                "THREADS": "many",
                "GEMINI_TEMPERATURE": "9",
                "ALLOWED_ORIGINS": "example.com",
                "K_SERVICE": "chat",
                "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
            }
        )
    problems = error.value.problems
    assert len(problems) == 7
    for fragment in (
        "GOOGLE_CLOUD_PROJECT",
        "AUTH_MODE",
        "THREADS",
        "GEMINI_TEMPERATURE",
        "ALLOWED_ORIGINS",
        "FIREBASE_AUTH_EMULATOR_HOST",
        "GEMINI_API_KEY",
    ):
        assert sum(fragment in p for p in problems) == 1, fragment
    assert all("\n" not in p for p in problems)


def test_origins_are_normalised():
    config = Config.from_env({**MINIMAL, "ALLOWED_ORIGINS": " https://a.example/ ,http://b:5173"})
    assert config.allowed_origins == ("https://a.example", "http://b:5173")


def test_file_settings_default_to_the_firebase_bucket_and_fit_every_limit():
    config = Config.from_env(MINIMAL)
    assert config.files_bucket == "demo-x.firebasestorage.app"
    limits = config.file_limits
    assert (limits.max_files, limits.max_file_bytes, limits.max_total_bytes) == (
        4,
        5 << 20,
        10 << 20,
    )
    # The largest request stays under Cloud Run's 32 MiB; the files a model request may carry,
    # in base64, leave room for the text under Gemini's 20 MB.
    assert config.max_request_bytes_with_files < 32 << 20
    assert config.history_max_file_bytes * 4 / 3 < 20_000_000 - 2_000_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FILES_BUCKET", "gs://my-bucket"),
        ("FILES_BUCKET", "My_Bucket"),
        ("MAX_FILES_BYTES", str(13 << 20)),
        ("HISTORY_MAX_FILE_BYTES", str(13 << 20)),
        ("HISTORY_MAX_FILE_BYTES", str(1 << 20)),  # smaller than one message's files
        ("ALLOWED_FILE_TYPES", "image/png, pdf"),
        ("MAX_FILE_BYTES", "12"),
    ],
)
def test_a_bad_file_setting_stops_the_start(name, value):
    with pytest.raises(ConfigError) as error:
        Config.from_env({**MINIMAL, name: value})
    assert len(error.value.problems) == 1 and name in error.value.problems[0]


@pytest.mark.parametrize(
    "name",
    [
        "FIRESTORE_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
    ],
)
def test_a_deployed_function_refuses_to_start_pointed_at_a_local_stand_in(name):
    assert Config.from_env({**MINIMAL, name: "http://127.0.0.1:9"}).deployed is False
    with pytest.raises(ConfigError) as refused:
        Config.from_env({**MINIMAL, "K_SERVICE": "chat", name: "http://127.0.0.1:9"})
    assert refused.value.problems == [
        f"{name} is set on a deployed function: it sends data to a local stand-in "
        "instead of the real service; remove it"
    ]


@pytest.mark.parametrize(
    ("env", "anonymous"),
    [
        ({}, "deny"),
        ({"APP_CHECK": "monitor"}, "deny"),
        ({"APP_CHECK": "enforce"}, "allow"),
        ({"APP_CHECK": "enforce", "ANONYMOUS_USERS": "deny"}, "deny"),
        ({"ANONYMOUS_USERS": "Allow"}, "allow"),
    ],
)
def test_anonymous_accounts_chat_only_where_app_check_is_enforced_unless_told(env, anonymous):
    assert Config.from_env({**MINIMAL, **env}).anonymous_users == anonymous


def test_no_otel_setting_builds_no_telemetry_and_exporters_are_read_as_listed():
    from workshop_chat.chat.telemetry import Quiet
    from workshop_chat.service import telemetry_of

    config = Config.from_env(MINIMAL)
    assert (config.traces_exporters, config.metrics_exporters) == ((), ())
    assert isinstance(telemetry_of(config), Quiet)
    listed = Config.from_env(
        {**MINIMAL, "OTEL_TRACES_EXPORTER": "Console, otlp", "OTEL_METRICS_EXPORTER": "none"}
    )
    assert (listed.traces_exporters, listed.metrics_exporters) == (("console", "otlp"), ())
    off = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert Config.from_env({**MINIMAL, **off}).traces_exporters == ()


def test_an_unknown_exporter_stops_the_start():
    with pytest.raises(ConfigError) as refused:
        Config.from_env(
            {**MINIMAL, "OTEL_TRACES_EXPORTER": "jaeger", "OTEL_METRICS_EXPORTER": "gcp_trace"}
        )
    assert refused.value.problems == [
        "OTEL_TRACES_EXPORTER=jaeger is not one of none, console, otlp, gcp_trace",
        "OTEL_METRICS_EXPORTER=gcp_trace is not one of none, console, otlp, gcp_monitoring",
    ]


def test_a_deployed_function_refuses_to_record_prompts_in_spans():
    capture = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    assert Config.from_env({**MINIMAL, **capture}).deployed is False  # locally, it is moot
    with pytest.raises(ConfigError) as refused:
        Config.from_env({**MINIMAL, "K_SERVICE": "chat", **capture})
    assert "no prompt or reply goes into a span" in refused.value.problems[0]


def test_telemetry_that_cannot_start_leaves_the_chat_running(caplog):
    from workshop_chat.chat.telemetry import Quiet
    from workshop_chat.service import telemetry_of

    # No Google credentials on this machine: Cloud Trace's exporter cannot be built.
    env = {**MINIMAL, "OTEL_TRACES_EXPORTER": "gcp_trace", "GOOGLE_APPLICATION_CREDENTIALS": ""}
    assert isinstance(telemetry_of(Config.from_env(env)), Quiet)
    assert [r.getMessage() for r in caplog.records] == [
        "telemetry could not start; running without it"
    ]
