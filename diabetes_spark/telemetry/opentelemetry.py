"""The OpenTelemetry backend (``azure-monitor-opentelemetry-exporter``, the extra ``opentelemetry``):
per session a tracer, meter and logger provider of its own (never the global ones, which the
runtime's MLflow tracing may use), each with an Azure Monitor exporter that stores and retries
nothing. The run is a SERVER span (a request), each step an INTERNAL one (a dependency of type
``InProc``), with the session's ids; metrics are delta histograms. Imported only to export."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.monitor.opentelemetry.exporter import (
    AzureMonitorLogExporter,
    AzureMonitorMetricExporter,
    AzureMonitorTraceExporter,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # the SDK's public logs module
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from diabetes_spark.telemetry.config import sdk_environment
from diabetes_spark.telemetry.core import SdkFailures, request_timeout, run_all

if TYPE_CHECKING:
    from diabetes_spark.redaction import Redactor
    from diabetes_spark.telemetry.config import Connection
    from diabetes_spark.telemetry.core import Span, Telemetry

EXPORT_INTERVAL = 15.0
QUEUE_CAPACITY = 50_000  # as the OpenCensus backend: a burst of quick records must not overflow
MAX_BATCH_SIZE = 500
#: Switches that keep the exporter from calling Microsoft on its own (statsbeat, SDK stats, OneSettings).
_SWITCHES = ("STATSBEAT_DISABLED_ALL", "SDKSTATS_DISABLED", "CONTROLPLANE_DISABLED")
#: What a log record keeps of the session's: its other attributes would become the exporter's.
_RECORD_FIELDS = ("name", "levelno", "levelname", "pathname", "lineno", "funcName", "created")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _context(trace_id: str, span_id: str) -> otel_context.Context:
    """An OpenTelemetry context whose current span is the session's span ``span_id``."""
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
    parent = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


class SessionIds(IdGenerator):
    """The ids the session chose: its trace id, and the span id of the span being recorded."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = int(trace_id, 16)
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class LogHandler(LoggingHandler):
    """Sends the session's prepared records: its dimensions as attributes, its span as context,
    exceptions as the ``exception.*`` attributes the exporter turns into exception envelopes."""

    def __init__(self, provider: LoggerProvider, redactor: Redactor) -> None:
        with warnings.catch_warnings():
            # Deprecated for opentelemetry-instrumentation-logging, which hooks all of logging at once.
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(logger_provider=provider)
        self.redactor = redactor

    def emit(self, record: logging.LogRecord) -> None:
        plain = logging.makeLogRecord({name: getattr(record, name) for name in _RECORD_FIELDS})
        plain.msg = record.getMessage()  # redacted by the session
        if record.exc_text:  # an exception envelope's message, as OpenCensus formats it (redacted)
            plain.msg = f"{plain.msg}\n{record.exc_text}"
        for name, value in getattr(record, "custom_dimensions", {}).items():
            plain.__dict__.setdefault(name, value)  # a dimension named like a LogRecord field must not replace it
        if record.exc_info and record.exc_info[0] is not None:
            plain.__dict__["exception.type"] = record.exc_info[0].__name__
            plain.__dict__["exception.message"] = self.redactor(str(record.exc_info[1]))
            plain.__dict__["exception.stacktrace"] = record.exc_text or ""  # formatted and redacted
        trace_id, span_id = getattr(record, "traceId", None), getattr(record, "spanId", None)
        token = otel_context.attach(_context(trace_id, span_id)) if trace_id and span_id else None
        try:
            super().emit(plain)
        finally:
            if token is not None:
                otel_context.detach(token)


class Exporters:
    """The three providers of one session (a :class:`~diabetes_spark.telemetry.core.Backend`)."""

    def __init__(self, telemetry: Telemetry, connection: Connection, credential: Any) -> None:
        timeout = request_timeout(telemetry.flush_timeout)
        self.stop_millis = int((telemetry.flush_timeout + timeout + 1.0) * 1000)  # past the deadline, sends end at once
        self.abandoned = False
        options: dict[str, Any] = {
            "connection_string": connection.for_exporter(),
            "disable_offline_storage": True,  # no files: what is lost is reported, not spooled
            "timeout": timeout,
            "read_timeout": timeout,  # azure-core's own default waits 300 s for an answer
            "retry_total": 0,  # retries would outlast the flush timeout: each batch is tried once
            "max_envelopes_per_second": 0,  # a batch over the rate cap would be dropped (nothing is stored)
            "raw_request_hook": self.before_request,
            "raw_response_hook": self.after_response,
        }
        if connection.entra_id:  # by default a managed identity, or AZURE_CLIENT_ID/_TENANT_ID/_CLIENT_SECRET
            from azure.identity import DefaultAzureCredential

            options["credential"] = credential or DefaultAzureCredential()
        with sdk_environment(*(f"APPLICATIONINSIGHTS_{switch}" for switch in _SWITCHES)):
            logs = AzureMonitorLogExporter(**options)
            spans = AzureMonitorTraceExporter(**options)
            metrics = AzureMonitorMetricExporter(**options)  # histograms in delta temporality, its default
        resource = Resource({"service.name": telemetry.component})
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(logs, max_queue_size=QUEUE_CAPACITY, max_export_batch_size=MAX_BATCH_SIZE)
        )
        self.ids, self.ids_lock = SessionIds(telemetry.trace_id), threading.Lock()
        # ALWAYS_ON, not $OTEL_TRACES_SAMPLER, which is meant for the process's own tracing.
        self.tracer_provider = TracerProvider(
            resource=resource, id_generator=self.ids, sampler=ALWAYS_ON, shutdown_on_exit=False
        )
        self.tracer_provider.add_span_processor(BatchSpanProcessor(spans, max_export_batch_size=MAX_BATCH_SIZE))
        self.tracer = self.tracer_provider.get_tracer("diabetes_spark")
        reader = PeriodicExportingMetricReader(
            metrics, export_interval_millis=EXPORT_INTERVAL * 1000, export_timeout_millis=timeout * 1000
        )
        self.meter_provider = MeterProvider([reader], resource=resource, shutdown_on_exit=False)
        self.meter = self.meter_provider.get_meter("diabetes_spark")
        self.histograms: dict[str, Any] = {}
        self.log_handler = LogHandler(self.logger_provider, telemetry._redactor)
        # The span exporter logs an error on every export when it cannot describe the process's global
        # tracer provider (a resource metric this backend does not send).
        exporter = "azure.monitor.opentelemetry.exporter.export"
        self.failures = SdkFailures(f"{exporter}._base", f"{exporter}.trace._exporter")

    def send_span(self, span: Span) -> None:
        """Record a finished span with the session's ids."""
        parent = _context(span.trace_id, span.parent) if span.parent else otel_context.Context()
        kind = trace.SpanKind.INTERNAL if span.parent else trace.SpanKind.SERVER
        with self.ids_lock:
            self.ids.span_id = int(span.span_id, 16)
            recorded = self.tracer.start_span(
                span.name, context=parent, kind=kind, attributes=dict(span.attributes), start_time=_ns(span.begun)
            )
        recorded.set_status(trace.Status(trace.StatusCode.OK if span.ok else trace.StatusCode.ERROR))
        recorded.end(end_time=_ns(span.ended))

    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        for name, value in values.items():
            if name not in self.histograms:
                self.histograms[name] = self.meter.create_histogram(name)
            self.histograms[name].record(value, attributes=dict(labels))

    def before_request(self, request: Any) -> None:
        """azure-core's hook before each request: past the deadline, refuse it, so the workers drop
        what is queued instead of waiting on the endpoint (the exporter logs the refusal once per
        batch, which the session's filter keeps off the console)."""
        if self.abandoned:
            raise RuntimeError("the telemetry session's flush timeout passed: not sent")

    def after_response(self, pipeline_response: Any) -> None:
        """azure-core's hook after each answer: an error status is the cause the warning gives (the
        exporter logs none for a 500 when it stores nothing)."""
        response = pipeline_response.http_response
        if response.status_code >= 300:
            self.failures.last = f"the endpoint answered {response.status_code} {response.reason or ''}".strip()

    def shutdown(self) -> None:
        """Flush and shut the providers down, in parallel; metrics are collected and exported last."""
        run_all(
            [
                self.logger_provider.shutdown,
                self.tracer_provider.shutdown,
                lambda: self.meter_provider.shutdown(timeout_millis=self.stop_millis),
            ],
            name="opentelemetry-close",
        )

    def abandon(self) -> None:
        self.abandoned = True
