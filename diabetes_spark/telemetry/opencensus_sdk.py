"""Where the OpenCensus backend bends the SDK: exporter subclasses that count what they hand on and
what the endpoint accepts, a metric producer that sends each value once, quiet transport logs, and
the clean-up the SDK has no public call for. Imported only with a connection string.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from opencensus.ext.azure.log_exporter import AzureLogHandler
from opencensus.ext.azure.metrics_exporter import MetricsExporter
from opencensus.ext.azure.trace_exporter import AzureExporter
from opencensus.metrics.export.metric import Metric
from opencensus.metrics.export.metric_descriptor import MetricDescriptor, MetricDescriptorType
from opencensus.metrics.export.point import Point
from opencensus.metrics.export.time_series import TimeSeries
from opencensus.metrics.export.value import ValueDouble
from opencensus.metrics.label_key import LabelKey
from opencensus.metrics.label_value import LabelValue

__all__ = [
    "EXPORT_INTERVAL",
    "QUEUE_CAPACITY",
    "MAX_BATCH_SIZE",
    "Delivery",
    "LogHandler",
    "TraceExporter",
    "MetricsExporterCounted",
    "PendingMetrics",
    "abandon",
    "unhook",
    "sdk_environment",
]

EXPORT_INTERVAL = 15.0
#: Records each exporter buffers before dropping new ones: the SDK's default overflowed on a burst of
#: quick log records even with a healthy endpoint (tests/test_telemetry.py sends such a burst).
QUEUE_CAPACITY = 50_000
#: Envelopes per HTTP request (the SDK sends 100; the ingestion API takes far more per call).
MAX_BATCH_SIZE = 500
_ENV_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_ENV_IKEY = "APPINSIGHTS_INSTRUMENTATIONKEY"
_ENV_STATSBEAT_OFF = "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"
_ENV_LOCK = threading.Lock()
_IN_TRANSMIT = threading.local()  # the delivery counter the current thread is sending for


class Delivery:
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
    once per dropped record (a burst of quick records made thousands of console lines); :func:`stop`
    reports the drops in its one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = getattr(_IN_EMIT, "delivery", None)
        if delivery is None:
            return True
        with delivery._lock:
            delivery.dropped += 1
        return False


logging.getLogger("opencensus.common.schedule").addFilter(_CountDrops())


class LogHandler(AzureLogHandler):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
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


class TraceExporter(AzureExporter):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
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


class MetricsExporterCounted(MetricsExporter):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
        self._delivery = delivery
        super().__init__(**options)

    def _transmit(self, envelopes: list[Any]) -> int:
        return self._delivery.transmit(super()._transmit, envelopes)


class PendingMetrics:
    """A metric producer that hands each recorded value to the exporter exactly once.

    (A gauge would be re-sent every interval, and ``sum(value)`` in Kusto would count it twice.)
    """

    def __init__(self, delivery: Delivery) -> None:
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
            descriptor = MetricDescriptor(
                name, name, "1", MetricDescriptorType.GAUGE_DOUBLE, [LabelKey(k, k) for k in keys]
            )
            series = TimeSeries([LabelValue(labels[k]) for k in keys], [Point(ValueDouble(value), when)], None)
            metrics.append(Metric(descriptor, [series]))
        return metrics


def abandon(exporter: Any) -> None:
    """After the deadline, drop what a worker still holds and tell it to exit.

    Otherwise a worker facing a black-holed endpoint keeps sending stale batches, one request
    timeout each, long after the job moved on. The records are already
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


def unhook(exporters: list[Any], *, wait: float | None) -> None:
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
def sdk_environment() -> Iterator[None]:
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
