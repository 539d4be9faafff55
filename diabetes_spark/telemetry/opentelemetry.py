"""The OpenTelemetry backend (``azure-monitor-opentelemetry-exporter``, the extra ``opentelemetry``).

Per telemetry session: a tracer, meter and logger provider of their own (never the global ones, so
sessions and the runtime's MLflow tracing stay apart), each with an Azure Monitor exporter wrapped
to count what the endpoint accepts; no local storage, no statsbeat, no remote configuration, no
SDK retries. Through the OpenTelemetry SDK's public API only.

Envelopes as the OpenCensus backend sends them: the run is a SERVER span (a request), each step an
INTERNAL span (a dependency of type ``InProc``), both with the ids the session chose; log records
carry the step's span as their context. Metrics are histograms: the exporter sends one envelope
per metric and set of dimensions per export interval (``valueCount``, ``valueSum``), where
OpenCensus sends one per value.
"""

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

# opentelemetry.sdk._logs is the SDK's public logs module despite its underscore (the logs SDK
# is published there while the signal is being stabilised); nothing private is imported from it.
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from diabetes_spark.telemetry.backend import Outcome, run_bounded
from diabetes_spark.telemetry.config import sdk_environment
from diabetes_spark.telemetry.opentelemetry_counting import (
    Account,
    CountedLogs,
    CountedMetrics,
    CountedSpans,
    response_hook,
)

if TYPE_CHECKING:
    from diabetes_spark.redaction import Redactor
    from diabetes_spark.telemetry.backend import FinishedSpan, Settings

__all__ = ["Providers", "start", "EXPORT_INTERVAL", "QUEUE_CAPACITY"]

EXPORT_INTERVAL = 15.0
QUEUE_CAPACITY = 50_000  # as the OpenCensus backend: a burst of quick records must not overflow
MAX_BATCH_SIZE = 500
#: What keeps the exporter from calling Microsoft's endpoints on its own (statsbeat, SDK stats,
#: OneSettings remote configuration), set while the exporters are built.
_SWITCHES = (
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED",
)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _context(trace_id: str, span_id: str) -> otel_context.Context:
    """An OpenTelemetry context whose current span is the session's span ``span_id``."""
    parent = trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
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

    def __init__(self, provider: LoggerProvider, account: Account, redactor: Redactor) -> None:
        with warnings.catch_warnings():
            # Deprecated for opentelemetry-instrumentation-logging, which hooks all of logging at once.
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(logger_provider=provider)
        self.account, self.redactor = account, redactor

    def emit(self, record: logging.LogRecord) -> None:
        self.account.hand(1)
        plain = logging.makeLogRecord(
            {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "pathname": record.pathname,
                "lineno": record.lineno,
                "funcName": record.funcName,
                "created": record.created,
                "msg": record.getMessage(),  # redacted by the session
            }
        )
        if record.exc_text:  # the message of an exception envelope, as OpenCensus formats it (and redacted)
            plain.msg = f"{plain.msg}\n{record.exc_text}"
        for name, value in getattr(record, "custom_dimensions", {}).items():
            if name not in plain.__dict__:  # a dimension named like a LogRecord field must not replace it
                plain.__dict__[name] = value
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

    def flush(self) -> None:
        """Nothing: the session flushes, within its deadline (the SDK's flush starts a thread per call)."""


class Providers:
    """The three providers of one session (a :class:`~diabetes_spark.telemetry.backend.Backend`)."""

    def __init__(self, settings: Settings) -> None:
        connection = settings.connection
        options: dict[str, Any] = {
            "connection_string": connection.for_exporter(),
            "disable_offline_storage": True,  # no files: what is lost at close is reported, not spooled
            "timeout": settings.request_timeout,
            "read_timeout": settings.request_timeout,  # azure-core's own default waits 300 s for an answer
            "retry_total": 0,  # azure-core retries would outlast the flush bound; each batch is tried once
            "max_envelopes_per_second": 0,  # a batch over the rate cap would be dropped (nothing is stored)
            "raw_response_hook": response_hook,  # the status of an error answer, for the warning
        }
        if connection.entra_id:
            options["credential"] = settings.credential or _default_credential()
        resource = Resource({"service.name": settings.component})
        self.accounts = [Account(), Account(), Account()]
        self.ids = SessionIds(settings.trace_id)
        self.ids_lock = threading.Lock()
        with sdk_environment(*_SWITCHES):
            logs = CountedLogs(AzureMonitorLogExporter(**options), self.accounts[0])
            spans = CountedSpans(AzureMonitorTraceExporter(**options), self.accounts[1])
            metrics = CountedMetrics(
                AzureMonitorMetricExporter(**options), self.accounts[2], {Histogram: AggregationTemporality.DELTA}
            )
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(logs, max_queue_size=QUEUE_CAPACITY, max_export_batch_size=MAX_BATCH_SIZE)
        )
        self.tracer_provider = TracerProvider(  # ALWAYS_ON: not $OTEL_TRACES_SAMPLER, meant for the process's own
            resource=resource, id_generator=self.ids, sampler=ALWAYS_ON, shutdown_on_exit=False
        )
        self.tracer_provider.add_span_processor(BatchSpanProcessor(spans, max_export_batch_size=MAX_BATCH_SIZE))
        self.tracer = self.tracer_provider.get_tracer("diabetes_spark")
        reader = PeriodicExportingMetricReader(
            metrics,
            export_interval_millis=EXPORT_INTERVAL * 1000,
            export_timeout_millis=settings.request_timeout * 1000,
        )
        self.meter_provider = MeterProvider([reader], resource=resource, shutdown_on_exit=False)
        self.meter = self.meter_provider.get_meter("diabetes_spark")
        self.histograms: dict[str, Any] = {}
        self.log_handler = LogHandler(self.logger_provider, self.accounts[0], settings.redactor)

    def send_span(self, span: FinishedSpan) -> None:
        """Record a finished span with the session's ids: SERVER (a request) for the run, INTERNAL
        (a dependency of type InProc) for a step."""
        self.accounts[1].hand(1)
        parent = _context(span.trace_id, span.parent) if span.parent else otel_context.Context()
        kind = trace.SpanKind.SERVER if span.server else trace.SpanKind.INTERNAL
        with self.ids_lock:
            self.ids.span_id = int(span.span_id, 16)
            recorded = self.tracer.start_span(
                span.name, context=parent, kind=kind, attributes=dict(span.attributes), start_time=_ns(span.begun)
            )
        recorded.set_status(trace.Status(trace.StatusCode.OK if span.ok else trace.StatusCode.ERROR))
        recorded.end(end_time=_ns(span.ended))

    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        self.accounts[2].hand(len(values))
        for name, value in values.items():
            histogram = self.histograms.get(name)
            if histogram is None:
                histogram = self.histograms[name] = self.meter.create_histogram(name)
            histogram.record(value, attributes=dict(labels))

    def close(self, timeout: float) -> Outcome:
        """Flush and shut the providers down, in parallel, within ``timeout`` seconds."""
        millis = max(int(timeout * 1000), 1)

        def stop(provider: Any) -> None:
            provider.force_flush(millis)
            provider.shutdown()

        finished = run_bounded(
            [
                lambda: stop(self.logger_provider),
                lambda: stop(self.tracer_provider),
                lambda: self.meter_provider.shutdown(timeout_millis=millis),  # collects and exports last
            ],
            timeout,
            name="opentelemetry-flush",
        )
        for account, stopped in zip(self.accounts, finished):
            account.settle(stopped)
        handed = sum(a.handed for a in self.accounts)
        accepted = sum(a.accepted for a in self.accounts)
        errors = [a.last_error for a in self.accounts if a.last_error]
        return Outcome(handed, handed - accepted, 0, errors[-1] if errors else "")


def _default_credential() -> Any:
    """Entra ID: ``DefaultAzureCredential`` (a managed identity, or ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/
    ``AZURE_CLIENT_SECRET`` of a service principal, e.g. from the secret scope in the cluster's environment)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def start(settings: Settings) -> Providers:
    """The providers and exporters of one session."""
    return Providers(settings)
