"""The OpenCensus backend (``opencensus-ext-azure``): one log handler, trace exporter and metrics
exporter per telemetry session, with local storage and statsbeat off; spans and envelopes shaped the
way the README's queries read them; a bounded stop that counts what was lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opencensus.common.utils import to_iso_str
from opencensus.trace.span import SpanKind
from opencensus.trace.span_context import SpanContext
from opencensus.trace.span_data import SpanData
from opencensus.trace.status import Status

from diabetes_spark.telemetry.backend import Outcome, run_bounded
from diabetes_spark.telemetry.config import sdk_environment
from diabetes_spark.telemetry.opencensus_sdk import (
    EXPORT_INTERVAL,
    MAX_BATCH_SIZE,
    QUEUE_CAPACITY,
    Delivery,
    LogHandler,
    MetricsExporterCounted,
    PendingMetrics,
    TraceExporter,
    stop_span_worker,
)

if TYPE_CHECKING:
    from diabetes_spark.redaction import Redactor
    from diabetes_spark.telemetry.backend import FinishedSpan, Settings

__all__ = ["Exporters", "QUEUE_CAPACITY", "build", "shaper", "start"]

_OK, _UNKNOWN = 0, 2  # google.rpc status codes, as OpenCensus spans use them


@dataclass
class Exporters:
    """The three exporters of one session (a :class:`~diabetes_spark.telemetry.backend.Backend`)."""

    log_handler: LogHandler
    trace_exporter: TraceExporter
    metrics_exporter: MetricsExporterCounted
    metrics: PendingMetrics
    deliveries: list[Delivery] = field(default_factory=list)
    periodic: threading.Event = field(default_factory=threading.Event)
    exporting: threading.Lock = field(default_factory=threading.Lock)

    def send_span(self, span: FinishedSpan) -> None:
        """Queue one finished span: SERVER becomes a request (the run), CLIENT a dependency (a step)."""
        data = SpanData(
            name=span.name,
            context=SpanContext(trace_id=span.trace_id),
            span_id=span.span_id,
            parent_span_id=span.parent,
            attributes=dict(span.attributes),
            start_time=to_iso_str(span.begun.replace(tzinfo=None)),
            end_time=to_iso_str(span.ended.replace(tzinfo=None)),
            child_span_count=0,
            stack_trace=None,
            annotations=[],
            message_events=[],
            links=[],
            status=Status(_OK) if span.ok else Status(_UNKNOWN, "failed"),
            same_process_as_parent_span=None,
            span_kind=SpanKind.SERVER if span.server else SpanKind.CLIENT,
        )
        self.trace_exporter.export([data])

    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        self.metrics.add(values, labels)

    def export_metrics(self) -> None:
        """Send the values recorded since the last export (one export at a time)."""
        with self.exporting:
            self.metrics_exporter.export_metrics(self.metrics.get_metrics())

    def export_periodically(self) -> None:
        """The session's metrics thread: an export every ``EXPORT_INTERVAL`` seconds until close."""
        while not self.periodic.wait(EXPORT_INTERVAL):
            self.export_metrics()

    def close(self, timeout: float) -> Outcome:
        """Deliver what the exporters hold and stop them, in parallel, within ``timeout`` seconds."""
        self.periodic.set()
        run_bounded(
            [
                lambda: self.log_handler.close(timeout),
                lambda: stop_span_worker(self.trace_exporter, timeout),
                self.export_metrics,  # after an export in flight, if any
            ],
            timeout,
            name="appinsights-flush",
        )
        for delivery in self.deliveries:
            delivery.deadline()
        for delivery in self.deliveries:
            delivery.settle()
        handed = sum(d.handed for d in self.deliveries)
        accepted = sum(d.accepted for d in self.deliveries)
        errors = [d.last_error for d in self.deliveries if d.last_error]
        dropped = sum(d.dropped for d in self.deliveries)
        return Outcome(handed, handed - accepted, dropped, errors[-1] if errors else "")


def shaper(component: str, trace_id: str, redactor: Redactor) -> Callable[[Any], bool]:
    """The telemetry processor of a session: role and operation names, operation id, step type,
    and redaction of every envelope field but the instrumentation key."""

    def shape(envelope: Any) -> bool:
        tags = envelope.tags
        tags["ai.cloud.role"] = component
        tags["ai.operation.name"] = component
        if not tags.get("ai.operation.id") or set(tags["ai.operation.id"]) == {"0"}:
            tags["ai.operation.id"] = trace_id
        parent = tags.get("ai.operation.parentId", "")
        if parent.startswith("|"):  # the log exporter's legacy "|<trace>.<span>." form: the span id
            tags["ai.operation.parentId"] = parent.strip("|.").rpartition(".")[2]
        data = envelope.data
        if data.baseType == "RequestData":
            data.baseData.name = component
        elif data.baseType == "RemoteDependencyData" and not data.baseData.get("type"):
            data.baseData.type = "InProc"
        for key in list(envelope):
            if key != "iKey":  # the key must stay readable for ingestion; it is no secret on its own
                envelope[key] = redactor.scrub(envelope[key])
        return True

    return shape


def build(connection_string: str, *, timeout: float, processor: Callable[[Any], bool]) -> Exporters:
    """Start one exporter of each kind for a validated connection string.

    The string must have been validated: on a bad key the SDK raises only after starting a worker
    thread, which then fails forever (``'AzureExporter' object has no attribute 'storage'``).

    Args:
        connection_string: ``InstrumentationKey=<guid>;IngestionEndpoint=<url>``.
        timeout: Seconds per HTTP request.
        processor: Telemetry processor applied to every envelope before it is sent.
    """
    options = {
        "connection_string": connection_string,
        "enable_local_storage": False,
        "enable_standard_metrics": False,
        "export_interval": EXPORT_INTERVAL,
        "timeout": timeout,
        "queue_capacity": QUEUE_CAPACITY,
        "max_batch_size": MAX_BATCH_SIZE,
        "grace_period": 1.0,  # what the SDK waits at interpreter exit; close() has flushed by then
    }
    deliveries = [Delivery(), Delivery(), Delivery()]
    built: list[Any] = []
    try:
        with sdk_environment("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"):
            built.append(LogHandler(deliveries[0], **options))
            built.append(TraceExporter(deliveries[1], **options))
            built.append(MetricsExporterCounted(deliveries[2], **options))
    except Exception:
        for exporter in built:  # stop the workers already started
            if isinstance(exporter, LogHandler):
                exporter.close(0.0)
            elif isinstance(exporter, TraceExporter):
                stop_span_worker(exporter, 0.0)
        raise
    for exporter in built:
        exporter.add_telemetry_processor(processor)
    log_handler, trace_exporter, metrics_exporter = built
    exporters = Exporters(log_handler, trace_exporter, metrics_exporter, PendingMetrics(deliveries[2]), deliveries)
    threading.Thread(target=exporters.export_periodically, name="appinsights-metrics", daemon=True).start()
    return exporters


def start(settings: Settings) -> Exporters:
    """The exporters of one session."""
    return build(
        settings.connection.for_exporter(),
        timeout=settings.request_timeout,
        processor=shaper(settings.component, settings.trace_id, settings.redactor),
    )
