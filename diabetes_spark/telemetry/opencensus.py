"""The OpenCensus backend (``opencensus-ext-azure``, the default): a log handler, a span exporter
and a metrics exporter per session, storing nothing and statsbeat off, with a telemetry processor
that shapes every envelope the way the documented queries read it. Imported only to export."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from opencensus.common.utils import to_iso_str
from opencensus.ext.azure.log_exporter import AzureLogHandler
from opencensus.ext.azure.metrics_exporter import MetricsExporter
from opencensus.ext.azure.trace_exporter import AzureExporter
from opencensus.metrics.export import metric, metric_descriptor, point, time_series, value
from opencensus.metrics.label_key import LabelKey
from opencensus.metrics.label_value import LabelValue
from opencensus.trace import span_context, span_data
from opencensus.trace.span import SpanKind
from opencensus.trace.status import Status

from diabetes_spark.telemetry.config import sdk_environment
from diabetes_spark.telemetry.core import SdkFailures, request_timeout, run_all

if TYPE_CHECKING:
    from diabetes_spark.telemetry.config import Connection
    from diabetes_spark.telemetry.core import Span, Telemetry

#: Records each exporter buffers before dropping new ones: the SDK's default overflows on a burst
#: of quick log records even when the endpoint is healthy.
QUEUE_CAPACITY = 50_000
MAX_BATCH_SIZE = 500  # envelopes per request (the SDK sends 100; the ingestion API takes far more)
_OK, _UNKNOWN = 0, 2  # google.rpc status codes, as OpenCensus spans use them


class LogHandler(AzureLogHandler):
    def flush(self, timeout: float | None = None) -> None:
        """Nothing: the session's close flushes within its deadline. ``logging.shutdown()`` at exit
        would flush without one, and wait forever behind a worker still busy with a dead endpoint."""


class Exporters:
    """The three exporters of one session (a :class:`~diabetes_spark.telemetry.core.Backend`)."""

    def __init__(self, telemetry: Telemetry, connection: Connection, credential: Any) -> None:
        # credential: none here; OpenCensus cannot send with Entra ID, as start() checks
        self.component, self.trace_id, self.redactor = telemetry.component, telemetry.trace_id, telemetry._redactor
        self.timeout = request_timeout(telemetry.flush_timeout)
        #: How long the shutdown waits for a worker: past the deadline it sends nothing more, so it
        #: ends once its request in flight has (the job itself waits only ``flush_timeout``).
        self.stop_wait = telemetry.flush_timeout + self.timeout + 1.0
        self.abandoned = False
        self.metrics: list[metric.Metric] = []
        self.metrics_lock = threading.Lock()
        options = {
            "connection_string": connection.for_exporter(),
            "enable_local_storage": False,  # no files: what is lost is reported, not spooled
            "enable_standard_metrics": False,
            "timeout": self.timeout,
            "queue_capacity": QUEUE_CAPACITY,
            "max_batch_size": MAX_BATCH_SIZE,
            "grace_period": 1.0,  # what the SDK's exit hooks wait; the session has flushed by then
        }
        with sdk_environment("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"):
            built = [LogHandler(**options), AzureExporter(**options), MetricsExporter(**options)]
        self.log_handler, self.span_exporter, self.metrics_exporter = built
        atexit.unregister(self.metrics_exporter.shutdown)  # nothing for it to do at exit: the session exports
        for exporter in built:
            exporter.add_telemetry_processor(self.shape)
        self.failures = SdkFailures("opencensus.ext.azure.common.transport", "opencensus.common.schedule")

    def send_span(self, span: Span) -> None:
        """Queue one span: SERVER becomes a request (the run), CLIENT a dependency (a step)."""
        data = span_data.SpanData(
            name=span.name,
            context=span_context.SpanContext(trace_id=span.trace_id),
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
            span_kind=SpanKind.CLIENT if span.parent else SpanKind.SERVER,
        )
        self.span_exporter.export([data])

    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        """Keep each value as a metric of its own, sent at close: ``sum(value)`` counts it once."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        keys = sorted(labels)
        gauge = metric_descriptor.MetricDescriptorType.GAUGE_DOUBLE
        for name, number in values.items():
            descriptor = metric_descriptor.MetricDescriptor(name, name, "1", gauge, [LabelKey(k, k) for k in keys])
            points = [point.Point(value.ValueDouble(number), now)]
            series = time_series.TimeSeries([LabelValue(labels[k]) for k in keys], points, None)
            with self.metrics_lock:
                self.metrics.append(metric.Metric(descriptor, [series]))

    def shape(self, envelope: Any) -> bool:
        """The telemetry processor: role and operation names, operation id, step type, redaction of
        every field but the instrumentation key; past the deadline, drop (nothing more is sent)."""
        if self.abandoned:
            return False
        tags = envelope.tags
        tags["ai.cloud.role"] = tags["ai.operation.name"] = self.component
        if not tags.get("ai.operation.id") or set(tags["ai.operation.id"]) == {"0"}:
            tags["ai.operation.id"] = self.trace_id
        parent = tags.get("ai.operation.parentId", "")
        if parent.startswith("|"):  # the log exporter's legacy "|<trace>.<span>." form: the span id
            tags["ai.operation.parentId"] = parent.strip("|.").rpartition(".")[2]
        data = envelope.data
        if data.baseType == "RequestData":
            data.baseData.name = self.component
        elif data.baseType == "RemoteDependencyData" and not data.baseData.get("type"):
            data.baseData.type = "InProc"
        for key in list(envelope):
            if key != "iKey":  # ingestion must read the key; it is no secret on its own
                envelope[key] = self.redactor.scrub(envelope[key])
        return True

    def shutdown(self) -> None:
        """Deliver the logs, spans and metrics, in parallel, and stop the workers."""
        with self.metrics_lock:
            metrics, self.metrics = self.metrics, []
        run_all(
            [
                lambda: self.log_handler.close(self.stop_wait),
                lambda: _stop_span_worker(self.span_exporter, self.stop_wait),
                lambda: self.metrics_exporter.export_metrics(metrics),
            ],
            name="appinsights-close",
        )

    def abandon(self) -> None:
        self.abandoned = True


def _stop_span_worker(exporter: AzureExporter, timeout: float) -> None:
    """Send what the span exporter holds and stop its worker thread within ``timeout`` seconds."""
    # Private members (_stop, _worker): AzureExporter has no public call that flushes or stops its
    # worker, which only its exit hooks stop; without them every session would leave a thread and
    # its exporter behind. setup.py pins opencensus-ext-azure below 1.2, the versions tested.
    atexit.unregister(exporter._worker.stop)
    atexit.unregister(exporter._stop)
    exporter._stop(timeout)
