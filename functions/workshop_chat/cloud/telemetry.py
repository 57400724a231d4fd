"""OpenTelemetry behind the core's telemetry port (`chat/telemetry.py`), configured by the
standard environment: `OTEL_TRACES_EXPORTER` and `OTEL_METRICS_EXPORTER` (`console`, `otlp`,
or Google Cloud's `gcp_trace` and `gcp_monitoring`; `none`, the default, builds nothing) and
`OTEL_SERVICE_NAME`, read by `config.py`; `OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_*` and
`OTEL_METRIC_EXPORT_INTERVAL`, read by the SDK itself.

Spans follow the GenAI semantic conventions for model calls (`chat <model>`) and tool calls
(`execute_tool <name>`), and the HTTP ones for the request. A request's trace is the one its
`traceparent` or Cloud Run's `X-Cloud-Trace-Context` names, so spans and log lines meet.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ..chat.telemetry import Attributes, Headers, Kind, ModelCall, Span
from ..config import Config

_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER}
_TELEMETRY_API = "https://telemetry.googleapis.com/v1/traces"
_TRACE_SCOPE = "https://www.googleapis.com/auth/trace.append"
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=(\d))?")
# Seconds: the GenAI conventions' advised buckets for operation durations.
_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
)  # fmt: skip
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


def build(config: Config) -> OpenTelemetry:
    """The providers and exporters the configuration asks for (`Config.traces_exporters`,
    `metrics_exporters`): imported only then, so a function without them loads none of it."""
    resource = Resource.create({"service.name": config.service_name})
    if {"gcp_trace", "gcp_monitoring"} & {*config.traces_exporters, *config.metrics_exporters}:
        # The Telemetry API files spans under the project their resource names.
        resource = resource.merge(Resource.create({"gcp.project_id": config.project}))
        # Which Cloud Run instance it is, from the metadata server: each instance's points are
        # a series of their own, as Cloud Monitoring requires.
        from opentelemetry.resourcedetector.gcp_resource_detector import (
            GoogleCloudResourceDetector,
        )

        resource = resource.merge(GoogleCloudResourceDetector(raise_on_error=False).detect())
    tracer_provider = TracerProvider(resource=resource)
    for name in config.traces_exporters:
        # The console shows each span as it ends; the others send batches in the background.
        processor = SimpleSpanProcessor if name == "console" else BatchSpanProcessor
        tracer_provider.add_span_processor(processor(_span_exporter(name)))
    readers = [PeriodicExportingMetricReader(_metric_exporter(n)) for n in config.metrics_exporters]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    provider = "gcp.vertex_ai" if config.uses_vertex else "gcp.gemini"
    return OpenTelemetry(tracer_provider, meter_provider, provider)


def _span_exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One line a span, among the log lines (`python -m stack traces` draws them); to
        # stdout as it is now, not as it was when the SDK was imported.
        return ConsoleSpanExporter(out=sys.stdout, formatter=_one_line)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return _telemetry_api()


def _telemetry_api() -> SpanExporter:
    """Cloud Trace, as Google now asks: OTLP/HTTP to the Telemetry API, with the instance's
    own credentials (the runtime account's roles/telemetry.tracesWriter); Cloud Trace's own
    exporter is deprecated."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    credentials, _ = google.auth.default(scopes=[_TRACE_SCOPE])
    session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return OTLPSpanExporter(endpoint=_TELEMETRY_API, session=session)


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _metric_exporter(name: str) -> MetricExporter:
    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stdout)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter

    # Two instances never write one series: each point carries its exporter's own id too.
    exporter: MetricExporter = CloudMonitoringMetricsExporter(add_unique_identifier=True)
    return exporter


class _Span:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(dict(attributes))

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        self._span.add_event(name, dict(attributes or {}))

    def fail(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR))


class _Served:
    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.trace_id = f"{span.get_span_context().trace_id:032x}"
        self._token: object = None

    def __enter__(self) -> _Served:
        self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        context.detach(self._token)  # type: ignore[arg-type]

    def finish(self, status: int, route: str | None) -> None:
        """HTTP's conventions: the name is the method and the route's template."""
        if route:
            self.span.update_name(f"{self.span.name} {route}")  # type: ignore[attr-defined]
            self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", str(status))
        self.span.end()


class OpenTelemetry:
    """The port, over one tracer provider and one meter provider of this process."""

    def __init__(
        self, tracer_provider: TracerProvider, meter_provider: MeterProvider, provider: str
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.provider = provider  # gen_ai.provider.name: gcp.gemini or gcp.vertex_ai
        self.tracer = tracer_provider.get_tracer("workshop_chat")
        meter = meter_provider.get_meter("workshop_chat")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens a model call used, by type",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="How long a model call took",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.first_token = meter.create_histogram(
            "workshop_chat.reply.time_to_first_token",
            unit="s",
            description="From asking the model to its first words",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.replies = meter.create_counter(
            "workshop_chat.replies", unit="{reply}", description="Replies ended, by status"
        )
        self.waits = meter.create_histogram(
            "workshop_chat.queue.wait",
            unit="s",
            description="How long a reply waited for its turn in its step",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )

    @contextmanager
    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        *,
        kind: Kind = "internal",
        parent: object = None,
        link: object = None,
        root: bool = False,
    ) -> Iterator[Span]:
        ctx = context.Context() if root else parent if isinstance(parent, context.Context) else None
        links = []
        if isinstance(link, context.Context):
            linked = trace.get_current_span(link).get_span_context()
            if linked.is_valid:
                links.append(Link(linked))
        given = dict(attributes or {})
        if "gen_ai.operation.name" in given and given["gen_ai.operation.name"] != "execute_tool":
            given["gen_ai.provider.name"] = self.provider
        with self.tracer.start_as_current_span(
            name,
            context=ctx,
            kind=_KINDS[kind],
            attributes=given,
            links=links,
            record_exception=False,  # an exception's text may quote what it should not
        ) as span:
            try:
                yield _Span(span)
            except BaseException as error:
                span.set_attribute("error.type", type(error).__name__)  # its class, never text
                raise

    def current(self) -> object:
        return context.get_current()

    def model_call(self, call: ModelCall) -> None:
        labels: dict[str, Any] = {
            "gen_ai.operation.name": call.operation,
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": call.model,
            "workshop_chat.step": call.step,
        }
        failed = {**labels, "error.type": call.error_type} if call.error_type else labels
        self.duration.record(call.seconds, failed)
        if call.input_tokens:
            self.token_usage.record(call.input_tokens, {**labels, "gen_ai.token.type": "input"})
        if call.output_tokens:
            self.token_usage.record(call.output_tokens, {**labels, "gen_ai.token.type": "output"})
        if call.first_token_seconds is not None:
            self.first_token.record(call.first_token_seconds, labels)

    def reply_ended(self, model: str, step: str, status: str) -> None:
        self.replies.add(
            1, {"gen_ai.request.model": model, "workshop_chat.step": step, "status": status}
        )

    def waited(self, step: str, seconds: float) -> None:
        self.waits.record(seconds, {"workshop_chat.step": step})

    # The HTTP edge -------------------------------------------------------------------

    def serve(self, method: str, headers: Headers) -> _Served:
        span = self.tracer.start_span(
            method,
            context=self.incoming(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        return _Served(span)

    def incoming(self, headers: Headers) -> context.Context:
        """The caller's trace: W3C `traceparent`, else Cloud Run's `X-Cloud-Trace-Context`."""
        found = propagate.extract({"traceparent": headers.get("traceparent") or ""})
        if trace.get_current_span(found).get_span_context().is_valid:
            return found
        match = _CLOUD_TRACE.fullmatch((headers.get("X-Cloud-Trace-Context") or "").strip())
        if match is None:
            return context.Context()
        span_id = int(match.group(2) or 0) or random.getrandbits(64)
        sampled = trace.TraceFlags.SAMPLED if match.group(3) != "0" else trace.TraceFlags.DEFAULT
        remote = trace.SpanContext(
            int(match.group(1), 16), span_id % (1 << 64) or 1, True, trace.TraceFlags(sampled)
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(remote))

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
