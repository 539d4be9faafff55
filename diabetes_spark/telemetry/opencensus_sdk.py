"""Where the OpenCensus backend meets the SDK: exporter subclasses that count what they are handed
and what the endpoint accepts, a metric producer that sends each value once, quiet transport logs,
and :func:`stop_span_worker`, the one use of a private member of ``opencensus-ext-azure``.

Everything else goes through the SDK's public surface: the exporters' constructors, ``emit``,
``export``, ``export_metrics``, ``apply_telemetry_processors``, ``close``, ``shutdown``, and its
loggers. Imported only with a connection string.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
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

from diabetes_spark.telemetry.backend import BatchWarnings

__all__ = [
    "EXPORT_INTERVAL",
    "QUEUE_CAPACITY",
    "MAX_BATCH_SIZE",
    "Delivery",
    "LogHandler",
    "TraceExporter",
    "MetricsExporterCounted",
    "PendingMetrics",
    "stop_span_worker",
]

EXPORT_INTERVAL = 15.0
#: Records each exporter buffers before dropping new ones: the SDK's default overflowed on a burst of
#: quick log records even with a healthy endpoint (tests/test_telemetry.py sends such a burst).
QUEUE_CAPACITY = 50_000
#: Envelopes per HTTP request (the SDK sends 100; the ingestion API takes far more per call).
MAX_BATCH_SIZE = 500
_SENDING = threading.local()  # the delivery the current thread sends batches for
_IN_EMIT = threading.local()  # the delivery of the exporter queueing on this thread


class Delivery:
    """One exporter's account: records handed to it, dropped because its buffer was full, and
    accepted by the endpoint.

    A batch is known sent when the thread that sent it starts the next one, or has ended, without
    the SDK having logged a transport failure for it in between (it logs
    every failure; with local storage off each failure is a loss). After the deadline the account
    is settled: nothing more is sent (:attr:`abandoned`) and nothing more counts.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handed = 0
        self.dropped = 0
        self.accepted = 0
        self.last_error = ""
        self.abandoned = False
        self.settling = False
        self.in_flight: dict[int, int] = {}

    def hand(self, count: int) -> None:
        with self.lock:
            self.handed += count

    def drop(self) -> None:
        with self.lock:
            self.dropped += 1

    def sending(self, count: int) -> None:
        """The current thread sends a batch of ``count``: its previous batch went through."""
        _SENDING.delivery = self
        with self.lock:
            if not self.abandoned:
                self.accepted += self.in_flight.get(threading.get_ident(), 0)
                self.in_flight[threading.get_ident()] = count

    def failed(self, message: str) -> None:
        """The SDK logged a transport failure for the batch the current thread is sending."""
        with self.lock:
            if not self.abandoned:
                self.in_flight.pop(threading.get_ident(), None)
                if not self.settling:  # past the deadline the cause is the deadline
                    self.last_error = message

    def deadline(self) -> None:
        """The flush deadline passed: a failure from now on is the deadline's, not the endpoint's."""
        with self.lock:
            self.settling = True

    def settle(self) -> None:
        """Close the account at the deadline: a batch still in flight went through if the thread that
        sent it has ended (a worker ends only after its exit event, so after its last request);
        one still running is lost. (An SDK close that gave up returns as if it had not.)"""
        with self.lock:
            senders = list(self.in_flight)
        running = {t.ident: t for t in threading.enumerate()}
        ended = set()
        for ident in senders:
            thread = running.get(ident)
            if thread is not None:
                thread.join(0.05)  # a worker that just set its exit event is about to end
            if thread is None or not thread.is_alive():
                ended.add(ident)
        with self.lock:
            if not self.abandoned:
                self.accepted += sum(count for ident, count in self.in_flight.items() if ident in ended)
            self.in_flight.clear()
            self.abandoned = True


# The SDK's transport messages about our batches become failures on their account.
logging.getLogger("opencensus.ext.azure.common.transport").addFilter(
    BatchWarnings(lambda: getattr(getattr(_SENDING, "delivery", None), "failed", None))
)


class _CountDrops(logging.Filter):
    """Counts the SDK's "Queue is full. Dropping telemetry." for our exporters instead of logging it
    once per dropped record (a burst of quick records made thousands of console lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = getattr(_IN_EMIT, "delivery", None)
        if delivery is None:
            return True
        delivery.drop()
        return False


logging.getLogger("opencensus.common.schedule").addFilter(_CountDrops())


class _Counted:
    """Mixin over an SDK exporter: each batch it is about to send is counted; none after the deadline."""

    delivery: Delivery

    def apply_telemetry_processors(self, envelopes: list[Any]) -> list[Any]:
        if self.delivery.abandoned:  # the records are counted lost: drain the queue without sending
            return []
        kept = super().apply_telemetry_processors(envelopes)  # type: ignore[misc]
        self.delivery.sending(len(kept))
        return kept


class LogHandler(_Counted, AzureLogHandler):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
        self.delivery = delivery
        self.stopped = False
        super().__init__(**options)

    def emit(self, record: logging.LogRecord) -> None:
        self.delivery.hand(1)
        _IN_EMIT.delivery = self.delivery
        try:
            super().emit(record)
        finally:
            _IN_EMIT.delivery = None

    def flush(self, timeout: float | None = None) -> None:
        # logging.shutdown() flushes live handlers at exit without a timeout; after a close that
        # gave up, the SDK's flush would wait forever behind the worker's exit event.
        if not self.stopped:
            super().flush(self.options.grace_period if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        if not self.stopped:
            self.stopped = True
            super().close(timeout)


class TraceExporter(_Counted, AzureExporter):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
        self.delivery = delivery
        super().__init__(**options)

    def export(self, span_datas: list[Any]) -> None:
        self.delivery.hand(len(span_datas))
        _IN_EMIT.delivery = self.delivery
        try:
            super().export(span_datas)
        finally:
            _IN_EMIT.delivery = None


class MetricsExporterCounted(_Counted, MetricsExporter):
    def __init__(self, delivery: Delivery, **options: Any) -> None:
        self.delivery = delivery
        super().__init__(**options)
        atexit.unregister(self.shutdown)  # nothing for it to do at exit: the session exports


class PendingMetrics:
    """A metric producer that hands each recorded value to the exporter exactly once.

    (A gauge would be re-sent every interval, and ``sum(value)`` in Kusto would count it twice.)
    """

    def __init__(self, delivery: Delivery) -> None:
        self.lock = threading.Lock()
        self.pending: list[tuple[str, float, dict[str, str], datetime]] = []
        self.delivery = delivery

    def add(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self.lock:
            self.pending.extend((name, value, dict(labels), now) for name, value in values.items())
        self.delivery.hand(len(values))

    def get_metrics(self) -> list[Metric]:
        with self.lock:
            pending, self.pending = self.pending, []
        metrics = []
        for name, value, labels, when in pending:
            keys = sorted(labels)
            descriptor = MetricDescriptor(
                name, name, "1", MetricDescriptorType.GAUGE_DOUBLE, [LabelKey(k, k) for k in keys]
            )
            series = TimeSeries([LabelValue(labels[k]) for k in keys], [Point(ValueDouble(value), when)], None)
            metrics.append(Metric(descriptor, [series]))
        return metrics


def stop_span_worker(exporter: AzureExporter, timeout: float) -> None:
    """Stop the span exporter's worker within ``timeout`` seconds and drop its exit hooks.

    The one use of private members of ``opencensus-ext-azure`` (``_stop``, ``_worker``):
    ``AzureExporter`` has no public way to flush or stop its worker thread, which the SDK stops
    only from the exit hooks it registers. Without this, every session would leave a thread, and
    its exporter, behind until the process ends. ``setup.py`` pins the versions this is tested
    with (``opencensus-ext-azure>=1.1.13,<1.2``; tests/test_telemetry_backends.py checks the
    installed version against that range and that the worker stops).
    """
    atexit.unregister(exporter._worker.stop)
    atexit.unregister(exporter._stop)
    exporter._stop(timeout)
