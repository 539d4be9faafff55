"""Exporters of the OpenTelemetry backend that count what the endpoint accepted, from each export's
public result, and keep the Azure exporter's per-batch failure messages for the one warning."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs.export import LogExporter, LogExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from diabetes_spark.telemetry.backend import BatchWarnings

__all__ = ["Account", "CountedLogs", "CountedMetrics", "CountedSpans", "response_hook"]

_EXPORTING = threading.local()  # the account of the export running on this thread


class Account:
    """Records handed to one exporter and those the endpoint accepted; after the deadline
    (:meth:`settle`) nothing more is sent or counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handed = 0
        self.accepted = 0
        self.last_error = ""
        self.abandoned = False

    def hand(self, count: int) -> None:
        with self.lock:
            self.handed += count

    def export(self, send: Any, batch: Any, count: int) -> Any:
        """Send ``batch`` (``count`` records) unless abandoned; count it if the result is success."""
        _EXPORTING.account, _EXPORTING.messages = self, []
        try:
            result = send(batch)
        finally:
            _EXPORTING.account, messages = None, _EXPORTING.messages
        with self.lock:
            if getattr(result, "name", "") == "SUCCESS":
                if not self.abandoned:
                    self.accepted += count
            elif messages:  # the exporter's last word on this batch: the cause of its loss
                self.last_error = messages[-1]
        return result

    def settle(self, stopped: bool) -> None:
        with self.lock:
            self.abandoned = True


def _batch_messages():
    """Where the exporter's messages about the batch this thread exports go: the batch's account keeps
    the last as the cause of its loss."""
    return _EXPORTING.messages.append if getattr(_EXPORTING, "account", None) is not None else None


# Logger names (the SDKs' module paths), not members: were one renamed, its messages would show per
# batch and the warning's cause would be vaguer; the counts come from the export results regardless.
for _name in (
    "azure.monitor.opentelemetry.exporter.export._base",
    "azure.monitor.opentelemetry.exporter.export.trace._exporter",
    "azure.monitor.opentelemetry.exporter.export.logs._exporter",
    "azure.monitor.opentelemetry.exporter.export.metrics._exporter",
    "azure.core.pipeline.policies._universal",
    "azure.core.pipeline.policies.http_logging_policy",
):
    logging.getLogger(_name).addFilter(BatchWarnings(_batch_messages))


def response_hook(pipeline_response: Any) -> None:
    """azure-core's ``raw_response_hook``: an error answer becomes the current export's last word
    (the exporter says nothing about a 500 when it stores nothing)."""
    messages = getattr(_EXPORTING, "messages", None)
    response = getattr(pipeline_response, "http_response", None)
    status = getattr(response, "status_code", 200)
    if messages is not None and getattr(_EXPORTING, "account", None) is not None and status >= 300:
        messages.append(f"the endpoint answered {status} {getattr(response, 'reason', '') or ''}".strip())


class CountedSpans(SpanExporter):
    def __init__(self, inner: SpanExporter, account: Account) -> None:
        self.inner, self.account = inner, account

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        if self.account.abandoned:  # counted lost already: drain without sending
            return SpanExportResult.FAILURE
        return self.account.export(self.inner.export, spans, len(spans))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountedLogs(LogExporter):
    def __init__(self, inner: LogExporter, account: Account) -> None:
        self.inner, self.account = inner, account

    def export(self, batch: Sequence[Any]) -> LogExportResult:
        if self.account.abandoned:
            return LogExportResult.FAILURE
        return self.account.export(self.inner.export, batch, len(batch))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountedMetrics(MetricExporter):
    """Counts recorded values: a data point of a histogram stands for ``count`` of them."""

    def __init__(self, inner: MetricExporter, account: Account, temporality: dict[type, Any]) -> None:
        super().__init__(preferred_temporality=temporality)
        self.inner, self.account = inner, account

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.account.abandoned:
            return MetricExportResult.FAILURE
        values = sum(
            getattr(point, "count", 1)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points
        )
        return self.account.export(lambda data: self.inner.export(data, timeout_millis, **kwargs), metrics_data, values)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
