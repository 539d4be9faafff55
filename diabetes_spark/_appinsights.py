"""The OpenCensus Azure exporters of one telemetry session: built safely, counted, stopped in time.

One log handler, one trace exporter and one metrics exporter per session, with local storage off
(no spool folder, no retries after the run) and statsbeat off. Each counts the records it was
handed and the ones the ingestion endpoint accepted, so :func:`stop` can say what was lost.
Imported only when a connection string is configured.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from opencensus.ext.azure.log_exporter import AzureLogHandler
from opencensus.ext.azure.metrics_exporter import MetricsExporter
from opencensus.ext.azure.trace_exporter import AzureExporter
from opencensus.metrics import transport
from opencensus.metrics.export.metric import Metric
from opencensus.metrics.export.metric_descriptor import MetricDescriptor, MetricDescriptorType
from opencensus.metrics.export.point import Point
from opencensus.metrics.export.time_series import TimeSeries
from opencensus.metrics.export.value import ValueDouble
from opencensus.metrics.label_key import LabelKey
from opencensus.metrics.label_value import LabelValue

__all__ = ["Exporters", "build", "stop"]

EXPORT_INTERVAL = 15.0
#: Records each exporter buffers before dropping new ones (the SDK's 8192 overflowed at 20k quick
#: log records even with a healthy endpoint); at ~1 KiB a record this bounds the buffer near 50 MiB.
QUEUE_CAPACITY = 50_000
#: Envelopes per HTTP request (the SDK sends 100; the ingestion API takes far more per call).
MAX_BATCH_SIZE = 500
_ENV_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_ENV_IKEY = "APPINSIGHTS_INSTRUMENTATIONKEY"
_ENV_STATSBEAT_OFF = "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"
_ENV_LOCK = threading.Lock()
_IN_TRANSMIT = threading.local()  # the delivery counter the current thread is sending for


class _Delivery:
    """Records handed to one exporter, those dropped because its buffer was full, and those the
    ingestion endpoint accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handed = 0
        self.dropped = 0
        self.accepted = 0
        self.last_error = ""

    def hand(self, count: int) -> None:
        with self._lock:
            self.handed += count

    def transmit(self, send: Callable[[list[Any]], int], envelopes: list[Any]) -> int:
        outer = getattr(_IN_TRANSMIT, "delivery", None) is None  # a redirect re-enters
        if outer:
            _IN_TRANSMIT.delivery = self
        try:
            result = send(envelopes)
        finally:
            if outer:
                _IN_TRANSMIT.delivery = None
        if outer and result == 0:  # TransportStatusCode.SUCCESS; without storage anything else is lost
            with self._lock:
                self.accepted += len(envelopes)
        return result


class _QuietTransport(logging.Filter):
    """Keeps the SDK's per-batch transport warnings about our exporters out of the logs.

    With local storage off its "Retrying" is never true; :func:`stop` reports the loss once,
    with the last of these messages as the cause.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = getattr(_IN_TRANSMIT, "delivery", None)
        if delivery is None:
            return True
        try:
            delivery.last_error = record.getMessage()
        except Exception:  # a malformed SDK message: keep its template
            delivery.last_error = str(record.msg)
        return False


logging.getLogger("opencensus.ext.azure.common.transport").addFilter(_QuietTransport())
_IN_EMIT = threading.local()  # the delivery counter of the handler emitting on this thread


class _CountDrops(logging.Filter):
    """Counts the SDK's "Queue is full. Dropping telemetry." for our handlers instead of logging it
    once per dropped record (20k quick records made thousands of console lines); :func:`stop`
    reports the drops in its one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = getattr(_IN_EMIT, "delivery", None)
        if delivery is None:
            return True
        with delivery._lock:
            delivery.dropped += 1
        return False


logging.getLogger("opencensus.common.schedule").addFilter(_CountDrops())


class _LogHandler(AzureLogHandler):
    def __init__(self, delivery: _Delivery, **options: Any) -> None:
        self._delivery = delivery
        self._stopped = False
        super().__init__(**options)

    def emit(self, record: logging.LogRecord) -> None:
        self._delivery.hand(1)
        _IN_EMIT.delivery = self._delivery
        try:
            super().emit(record)
        finally:
            _IN_EMIT.delivery = None

    def _transmit(self, envelopes: list[Any]) -> int:
        return self._delivery.transmit(super()._transmit, envelopes)

    def flush(self, timeout: float | None = None) -> None:
        # logging.shutdown() flushes live handlers at exit without a timeout; after a close that
        # gave up, the SDK's flush would wait forever behind the worker's exit event.
        if not self._stopped:
            super().flush(self.options.grace_period if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        if not self._stopped:
            self._stopped = True
            super().close(timeout)


class _TraceExporter(AzureExporter):
    def __init__(self, delivery: _Delivery, **options: Any) -> None:
        self._delivery = delivery
        super().__init__(**options)

    def export(self, span_datas: list[Any]) -> None:
        self._delivery.hand(len(span_datas))
        _IN_EMIT.delivery = self._delivery
        try:
            super().export(span_datas)
        finally:
            _IN_EMIT.delivery = None

    def _transmit(self, envelopes: list[Any]) -> int:
        return self._delivery.transmit(super()._transmit, envelopes)


class _MetricsExporter(MetricsExporter):
    def __init__(self, delivery: _Delivery, **options: Any) -> None:
        self._delivery = delivery
        super().__init__(**options)

    def _transmit(self, envelopes: list[Any]) -> int:
        return self._delivery.transmit(super()._transmit, envelopes)


class _PendingMetrics:
    """A metric producer that hands each recorded value to the exporter exactly once.

    (A gauge would be re-sent every interval, and ``sum(value)`` in Kusto would count it twice.)
    """

    def __init__(self, delivery: _Delivery) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, float, dict[str, str], datetime]] = []
        self._delivery = delivery

    def add(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._lock:
            self._pending.extend((name, value, dict(labels), now) for name, value in values.items())
        self._delivery.hand(len(values))

    def get_metrics(self) -> list[Metric]:
        with self._lock:
            pending, self._pending = self._pending, []
        metrics = []
        for name, value, labels, when in pending:
            keys = sorted(labels)
            descriptor = MetricDescriptor(name, name, "1", MetricDescriptorType.GAUGE_DOUBLE, [LabelKey(k, k) for k in keys])
            series = TimeSeries([LabelValue(labels[k]) for k in keys], [Point(ValueDouble(value), when)], None)
            metrics.append(Metric(descriptor, [series]))
        return metrics


@dataclass
class Exporters:
    """The three exporters of one session."""

    log_handler: _LogHandler
    trace_exporter: _TraceExporter
    metrics_exporter: _MetricsExporter
    metrics: _PendingMetrics
    deliveries: list[_Delivery] = field(default_factory=list)

    def export_span(self, span_data: Any) -> None:
        """Queue one finished span."""
        self.trace_exporter.export([span_data])


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
    deliveries = [_Delivery(), _Delivery(), _Delivery()]
    built: list[Any] = []
    try:
        with _sdk_environment():
            built.append(_LogHandler(deliveries[0], **options))
            built.append(_TraceExporter(deliveries[1], **options))
            built.append(_MetricsExporter(deliveries[2], **options))
    except Exception:
        _unhook(built, wait=0.0)
        raise
    for exporter in built:
        exporter.add_telemetry_processor(processor)
    log_handler, trace_exporter, metrics_exporter = built
    metrics = _PendingMetrics(deliveries[2])
    metrics_exporter.exporter_thread = transport.get_exporter_thread([metrics], metrics_exporter, interval=EXPORT_INTERVAL)
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
        _abandon(exporter)
    _unhook([exporters.trace_exporter, exporters.metrics_exporter], wait=None)
    handed = sum(d.handed for d in exporters.deliveries)
    accepted = sum(d.accepted for d in exporters.deliveries)
    dropped = sum(d.dropped for d in exporters.deliveries)
    errors = [d.last_error for d in exporters.deliveries if d.last_error]
    return handed, handed - accepted, dropped, errors[-1] if errors else ""


def _abandon(exporter: Any) -> None:
    """After the deadline, drop what a worker still holds and tell it to exit.

    Otherwise a worker facing a black-holed endpoint keeps sending stale batches, one request
    timeout each, long after the job moved on (20k records: 40 batches). The records are already
    counted as lost. The SDK offers no public way to do this; it reaches into its ``Queue``.
    """
    worker, pending = getattr(exporter, "_worker", None), getattr(exporter, "_queue", None)
    if worker is None or pending is None or not worker.is_alive():
        return
    inner = pending._queue  # the stdlib queue.Queue inside the SDK's Queue
    with inner.mutex:
        inner.queue.clear()
        inner.not_full.notify_all()
    pending.put(pending.EXIT_EVENT, block=False)


def _unhook(exporters: list[Any], *, wait: float | None) -> None:
    """Remove the SDK's exit hooks (they would wait for these exporters again at exit).

    With ``wait`` (a set that could not be completed), also stop the workers already started.
    """
    for exporter in exporters:
        worker = getattr(exporter, "_worker", None)
        if wait is not None and worker is not None:
            worker.stop(wait)
        if isinstance(exporter, AzureExporter):
            atexit.unregister(exporter._stop)
            atexit.unregister(worker.stop)
        if isinstance(exporter, MetricsExporter):
            atexit.unregister(exporter.shutdown)


@contextmanager
def _sdk_environment() -> Iterator[None]:
    """The environment the SDK constructors see: no statsbeat, no connection string of their own.

    Each constructor re-parses ``$APPLICATIONINSIGHTS_CONNECTION_STRING`` even when given an
    explicit string, and fails on a bare key or a trailing ``;``; statsbeat would call Azure's
    metadata service and Microsoft's endpoints synchronously. Both are hidden for the few
    milliseconds of construction, then restored.
    """
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in (_ENV_CONNECTION_STRING, _ENV_IKEY, _ENV_STATSBEAT_OFF)}
        os.environ.pop(_ENV_CONNECTION_STRING, None)
        os.environ.pop(_ENV_IKEY, None)
        os.environ[_ENV_STATSBEAT_OFF] = "true"
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
