"""The OpenCensus backend (``opencensus-ext-azure``): one log handler, trace exporter and metrics
exporter per telemetry session, with local storage and statsbeat off; spans and envelopes shaped the
way the README's queries read them; a bounded stop that counts what was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opencensus.common.utils import to_iso_str
from opencensus.metrics import transport
from opencensus.trace.span import SpanKind
from opencensus.trace.span_context import SpanContext
from opencensus.trace.span_data import SpanData
from opencensus.trace.status import Status

from diabetes_spark.telemetry.opencensus_sdk import (
    EXPORT_INTERVAL,
    MAX_BATCH_SIZE,
    QUEUE_CAPACITY,
    Delivery,
    LogHandler,
    MetricsExporterCounted,
    PendingMetrics,
    TraceExporter,
    abandon,
    sdk_environment,
    unhook,
)

if TYPE_CHECKING:
    from diabetes_spark.redaction import Redactor
    from diabetes_spark.telemetry.core import FinishedSpan

__all__ = ["Exporters", "QUEUE_CAPACITY", "build", "shaper", "start", "stop", "stop_and_report"]

_log = logging.getLogger("diabetes_spark.telemetry")

_OK, _UNKNOWN = 0, 2  # google.rpc status codes, as OpenCensus spans use them


@dataclass
class Exporters:
    """The three exporters of one session."""

    log_handler: LogHandler
    trace_exporter: TraceExporter
    metrics_exporter: MetricsExporterCounted
    metrics: PendingMetrics
    deliveries: list[Delivery] = field(default_factory=list)

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
        "grace_period": 1.0,  # what the SDK waits at interpreter exit; stop() has flushed by then
    }
    deliveries = [Delivery(), Delivery(), Delivery()]
    built: list[Any] = []
    try:
        with sdk_environment():
            built.append(LogHandler(deliveries[0], **options))
            built.append(TraceExporter(deliveries[1], **options))
            built.append(MetricsExporterCounted(deliveries[2], **options))
    except Exception:
        unhook(built, wait=0.0)
        raise
    for exporter in built:
        exporter.add_telemetry_processor(processor)
    log_handler, trace_exporter, metrics_exporter = built
    metrics = PendingMetrics(deliveries[2])
    metrics_exporter.exporter_thread = transport.get_exporter_thread(
        [metrics], metrics_exporter, interval=EXPORT_INTERVAL
    )
    return Exporters(log_handler, trace_exporter, metrics_exporter, metrics, deliveries)


def stop(exporters: Exporters, timeout: float) -> tuple[int, int, int, str]:
    """Deliver what the exporters hold and stop them, in parallel, within ``timeout`` seconds.

    Returns:
        ``(handed, lost, dropped, last_error)``: records handed to the exporters, how many of them
        the endpoint did not accept (failed, dropped, or still in flight at the deadline), how many
        of those were dropped because a buffer was full, and the last transport error message.
    """
    deadline = time.monotonic() + timeout
    periodic = exporters.metrics_exporter.exporter_thread
    periodic.cancel()

    def final_metrics() -> None:
        periodic.join(timeout)  # an export in flight finishes first
        exporters.metrics_exporter.export_metrics(exporters.metrics.get_metrics())

    stops: list[Callable[[], object]] = [
        lambda: exporters.log_handler.close(timeout),
        lambda: exporters.trace_exporter._stop(timeout),
        final_metrics,
    ]
    threads = [threading.Thread(target=s, name=f"appinsights-flush-{i}", daemon=True) for i, s in enumerate(stops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    for exporter in (exporters.log_handler, exporters.trace_exporter):
        abandon(exporter)
    unhook([exporters.trace_exporter, exporters.metrics_exporter], wait=None)
    handed = sum(d.handed for d in exporters.deliveries)
    accepted = sum(d.accepted for d in exporters.deliveries)
    dropped = sum(d.dropped for d in exporters.deliveries)
    errors = [d.last_error for d in exporters.deliveries if d.last_error]
    return handed, handed - accepted, dropped, errors[-1] if errors else ""


def start(
    component: str, trace_id: str, redactor: Redactor, key: str, endpoint: str, flush_timeout: float
) -> Exporters | None:
    """The exporters of one run (``None``, with a warning, when the SDK cannot start them)."""
    timeout = max(min(flush_timeout, 10.0), 0.5)
    try:
        connection = f"InstrumentationKey={key};IngestionEndpoint={endpoint}"
        return build(connection, timeout=timeout, processor=shaper(component, trace_id, redactor))
    except Exception as e:  # the configuration was valid: an SDK problem must not stop the job
        _log.warning(
            "telemetry of %s goes to the console only: the Application Insights exporters could not start (%s: %s)",
            component,
            type(e).__name__,
            redactor(str(e)),
        )
        return None


def stop_and_report(
    exporters: Exporters, component: str, endpoint: str, flush_timeout: float, redactor: Redactor
) -> None:
    """:func:`stop` within ``flush_timeout`` seconds, and one warning if anything was lost."""
    handed, lost, dropped, error = stop(exporters, flush_timeout)
    if lost <= 0:
        return
    # Nothing is retried (no local storage): the SDK's "Retrying" wording would mislead.
    error = error.removeprefix("Retrying due to ").removesuffix(" Retrying.").strip()
    cause = f"last error: {redactor(error)[:300]}" if error else f"no answer within {flush_timeout:g} s"
    if dropped:
        cause += f"; {dropped} dropped when more than {QUEUE_CAPACITY} records were waiting"
    _log.warning(
        "telemetry of %s: %d of %d records were lost, not delivered to Application Insights at %s (%s); "
        "the job itself is not affected",
        component,
        lost,
        handed,
        endpoint,
        cause,
    )
