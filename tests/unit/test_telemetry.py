"""The metrics' names and labels (`cloud/telemetry.py`): the GenAI conventions' own, plus the
step; never a user or a session, whose values have no bound."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from workshop_chat.chat.telemetry import ModelCall
from workshop_chat.cloud.telemetry import OpenTelemetry

BOUNDED = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.token.type",
    "workshop_chat.step",
    "status",
    "error.type",
}


def recorded(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def telemetry() -> tuple[OpenTelemetry, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    return OpenTelemetry(TracerProvider(), provider, "gcp.gemini"), reader


def test_a_model_call_counts_tokens_by_type_and_its_duration_by_model_and_step():
    otel, reader = telemetry()
    otel.model_call(ModelCall("chat", "gemini-2.5-flash", "define", 1.5, 120, 40, 0.3))
    otel.model_call(ModelCall("chat", "gemini-2.5-flash", "define", 0.2, error_type="incomplete"))
    metrics = recorded(reader)
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum for p in metrics["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": 120, "output": 40}
    durations = metrics["gen_ai.client.operation.duration"]
    assert sorted(p.count for p in durations) == [1, 1]
    assert {p.attributes.get("error.type") for p in durations} == {None, "incomplete"}
    (first,) = metrics["workshop_chat.reply.time_to_first_token"]
    assert first.sum == 0.3
    assert dict(first.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gemini-2.5-flash",
        "workshop_chat.step": "define",
    }


def test_replies_and_waits_are_labelled_by_model_step_and_status_only():
    otel, reader = telemetry()
    otel.reply_ended("gemini-2.5-flash", "ideate", "complete")
    otel.reply_ended("gemini-2.5-flash", "ideate", "complete")
    otel.reply_ended("gemini-2.5-flash", "ideate", "stopped")
    otel.waited("ideate", 2.0)
    metrics = recorded(reader)
    replies = {p.attributes["status"]: p.value for p in metrics["workshop_chat.replies"]}
    assert replies == {"complete": 2, "stopped": 1}
    (wait,) = metrics["workshop_chat.queue.wait"]
    assert dict(wait.attributes) == {"workshop_chat.step": "ideate"} and wait.sum == 2.0
    labels = {key for points in metrics.values() for p in points for key in p.attributes}
    assert labels <= BOUNDED


def test_every_label_any_metric_takes_is_a_bounded_one():
    otel, reader = telemetry()
    otel.model_call(ModelCall("generate_content", "m", "s", 1.0, 1, 1, 0.1, "failed"))
    otel.reply_ended("m", "s", "error")
    otel.waited("s", 1.0)
    labels = {key for points in recorded(reader).values() for p in points for key in p.attributes}
    assert labels == BOUNDED


def test_cloud_trace_is_reached_as_otlp_through_the_telemetry_api(monkeypatch):
    """Cloud Trace's own exporter is deprecated: spans go as OTLP/HTTP to the Telemetry API,
    with the instance's credentials, under the project their resource names."""
    import google.auth
    from google.oauth2.credentials import Credentials

    from workshop_chat.cloud import telemetry as otel
    from workshop_chat.config import Config

    asked = []

    def default(scopes=None):
        asked.append(scopes)
        return Credentials("token"), "elsewhere"

    monkeypatch.setattr(google.auth, "default", default)
    config = Config.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "demo-x",
            "GEMINI_API_KEY": "k",
            "OTEL_TRACES_EXPORTER": "gcp_trace",
        }
    )
    built = otel.build(config)
    (processor,) = built.tracer_provider._active_span_processor._span_processors
    exporter = processor._batch_processor._exporter
    assert exporter._endpoint == "https://telemetry.googleapis.com/v1/traces"
    assert asked == [["https://www.googleapis.com/auth/trace.append"]]
    assert built.tracer_provider.resource.attributes["gcp.project_id"] == "demo-x"
    built.shutdown()
