"""The session of one job run, whichever SDK sends it: dimensions, a span per step, metrics,
redaction, a failure sent once, and a close bounded by the flush timeout that reports a loss once."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Real
from typing import Any, Protocol

from diabetes_spark._version import __version__
from diabetes_spark.redaction import Redactor
from diabetes_spark.telemetry import logs

#: Custom metric recorded for every step, with the step's name in dimension ``step``.
STEP_DURATION_METRIC = "step_duration_seconds"
RUN_DURATION_METRIC = "run_duration_seconds"
VERSION_DIMENSION = "diabetes_spark_version"

_log = logging.getLogger("diabetes_spark.telemetry")


@dataclass(frozen=True)
class Span:
    """A run (no parent: an App Insights request) or a step (a dependency), ended."""

    name: str
    trace_id: str
    span_id: str
    parent: str | None
    begun: datetime
    ended: datetime
    ok: bool
    attributes: Mapping[str, Any]


class SdkFailures(logging.Filter):
    """Keeps an SDK's loggers quiet while a session sends: their messages are about its batches,
    and the session reports a loss once. The last warning of the first logger (the transport's)
    is the cause that report gives. Attached as the exporters start, removed as they stop."""

    def __init__(self, *loggers: str) -> None:
        super().__init__()
        self.loggers = loggers
        self.last = ""
        for name in loggers:
            logging.getLogger(name).addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == self.loggers[0] and record.levelno >= logging.WARNING:
            try:
                self.last = record.getMessage()
            except Exception:  # a malformed SDK message: keep its template
                self.last = str(record.msg)
        return False

    def remove(self) -> None:
        for name in self.loggers:
            logging.getLogger(name).removeFilter(self)


class Backend(Protocol):
    """The exporters of one session over one SDK (:mod:`.opencensus`, :mod:`.opentelemetry`): they
    queue, never send on the caller's thread; ``shutdown`` delivers, and ends soon after ``abandon``."""

    log_handler: logging.Handler
    failures: SdkFailures

    def send_span(self, span: Span) -> None: ...
    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None: ...
    def shutdown(self) -> None: ...
    def abandon(self) -> None: ...


def request_timeout(flush_timeout: float) -> float:
    """Seconds per HTTP request: the flush timeout, within [0.5, 10]."""
    return max(min(flush_timeout, 10.0), 0.5)


def run_all(calls: Sequence[Callable[[], object]], name: str) -> None:
    """Run ``calls`` in parallel threads and wait for all of them."""
    threads = [threading.Thread(target=call, name=f"{name}-{i}", daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Telemetry:
    """Logs, spans and metrics of one job run; see :func:`~diabetes_spark.telemetry.start`.

    A step is a :meth:`span`; records logged inside it carry its span id and ``step`` dimension.
    An exception is sent once with its stack trace: a record logging an exception already sent
    (a notebook re-logging what a step logged) keeps its message and drops the repeated trace.
    """

    def __init__(
        self,
        component: str,
        *,
        secrets: Iterable[str] = (),
        dimensions: Mapping[str, str] | None = None,
        flush_timeout: float = 10.0,
    ) -> None:
        self.component = component
        self.flush_timeout = max(float(flush_timeout), 0.0)
        #: The operation id of every record of this run (W3C trace id: 32 hex digits).
        self.trace_id: str = uuid.uuid4().hex
        self._root_span_id = _new_span_id()
        self._started = (datetime.now(timezone.utc), time.perf_counter())
        self._redactor = Redactor(secrets)
        self._dimensions: dict[str, str] = {VERSION_DIMENSION: __version__}
        self._lock = threading.Lock()
        self._step: ContextVar[str] = ContextVar(f"telemetry step of {self.trace_id}", default=self._root_span_id)
        self._sent_errors: list[BaseException] = []
        self._failed = False
        self._closed = False
        self._backend: Backend | None = None
        self._endpoint = ""
        self._route: logs.Route | None = None
        self.set_dimensions(**(dimensions or {}))

    @property
    def exporting(self) -> bool:
        """True when records go to Application Insights (False: console only)."""
        return self._backend is not None

    def logger(self, step: str | None = None) -> logging.Logger:
        """The component logger, or the child logger of ``step`` (``<component>.<step>``)."""
        return logging.getLogger(self.component if step is None else f"{self.component}.{step}")

    @contextmanager
    def span(self, step: str, **attributes: Any) -> Iterator[logging.Logger]:
        """Time one step as a span (an App Insights dependency) and a duration metric; yields the
        step's logger. An exception is sent with its stack trace (not shown on the console: the
        caller reports it), marks the span and the run failed, and propagates."""
        log = self.logger(step)
        span_id, begun, clock = _new_span_id(), datetime.now(timezone.utc), time.perf_counter()
        step_token = self._step.set(span_id)
        ok = True
        try:
            yield log
            log.info("step %s done in %.2f s", step, time.perf_counter() - clock, extra={logs.EXPORT_ONLY: True})
        except BaseException as error:
            ok = False
            self._failed = True
            if isinstance(error, Exception) and not self._was_sent(error):
                elapsed = time.perf_counter() - clock
                log.exception("step %s failed after %.2f s", step, elapsed, extra={logs.EXPORT_ONLY: True})
            raise
        finally:
            self._step.reset(step_token)
            self._record({STEP_DURATION_METRIC: time.perf_counter() - clock}, {"step": step})
            self._send_span(step, span_id, self._root_span_id, begun, ok, {**attributes, "step": step})

    @property
    def dimensions(self) -> dict[str, str]:
        """The custom dimensions of every record now (redacted)."""
        with self._lock:
            return dict(self._dimensions)

    def set_dimensions(self, **dimensions: str | None) -> None:
        """Add custom dimensions to every later record (``None`` removes one)."""
        with self._lock:
            for name, value in dimensions.items():
                if value is None:
                    self._dimensions.pop(name, None)
                else:
                    self._dimensions[name] = self._redactor(str(value))

    def add_secrets(self, values: Iterable[str]) -> None:
        """Redact ``values`` (and their URL-encoded and base64 forms) from everything from now on."""
        self._redactor.add(values)
        with self._lock:
            self._dimensions = self._redactor.scrub(self._dimensions)

    def record(self, metrics: Mapping[str, float]) -> None:
        """Send custom metrics (``rows_in``, ``rmse``, ...) with the current dimensions. Values
        that are not finite are skipped (App Insights rejects them); names are sent in lower case,
        as OpenTelemetry's SDK sends them, so both backends name a metric alike."""
        self._record(metrics, {})

    def fail(self, error: BaseException) -> None:
        """Mark the run failed and send ``error`` with its stack trace, unless a step already did."""
        self._failed = True
        if isinstance(error, Exception) and not self._was_sent(error):
            name = type(error).__name__
            self.logger().error(
                "%s failed: %s: %s", self.component, name, error, exc_info=error, extra={logs.EXPORT_ONLY: True}
            )

    def close(self) -> None:
        """End the run's request and deliver what is buffered, waiting at most ``flush_timeout``
        seconds. Never raises; a loss is reported in one warning. A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        begun, clock = self._started
        try:
            try:
                self._record({RUN_DURATION_METRIC: time.perf_counter() - clock}, {})
                self._send_span(self.component, self._root_span_id, None, begun, not self._failed, {})
            finally:
                if self._route is not None:
                    logs.detach(self.logger(), self._route)
                self._sent_errors.clear()
            if self._backend is not None:
                self._shut_down(self._backend)
        except Exception as e:  # telemetry must never be why a job fails
            _log.warning("telemetry of %s could not be closed cleanly: %s", self.component, self._redactor(str(e)))

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        self.close()

    def _was_sent(self, error: BaseException) -> bool:
        """True if ``error`` was logged already; otherwise remember it as logged now."""
        with self._lock:
            if any(error is sent for sent in self._sent_errors):
                return True
            self._sent_errors.append(error)
            return False

    def _prepare(self, record: logging.LogRecord) -> None:
        """Redact ``record`` and attach the dimensions, the step and the trace ids."""
        redact = self._redactor
        try:
            record.msg, record.args = redact(record.getMessage()), None
        except Exception:  # a record that cannot be formatted fails in its handlers, as it would anyway
            return
        if record.exc_info and record.exc_info[1] is not None:
            if not getattr(record, logs.EXPORT_ONLY, False) and self._was_sent(record.exc_info[1]):
                record.exc_info, record.exc_text = None, None  # sent already: keep the message only
            elif not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(record.exc_text) if record.exc_text else record.exc_text
        record.stack_info = redact(record.stack_info) if record.stack_info else record.stack_info
        with self._lock:
            dimensions = dict(self._dimensions)
        if record.name.startswith(self.component + "."):
            dimensions["step"] = record.name[len(self.component) + 1 :]
        own = getattr(record, "custom_dimensions", None)
        if isinstance(own, Mapping):
            dimensions.update({str(k): str(v) for k, v in own.items()})
        record.custom_dimensions = redact.scrub(dimensions)
        record.traceId, record.spanId = self.trace_id, self._step.get()

    def _record(self, metrics: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        if self._backend is None:
            return
        # App Insights rejects values that are not finite numbers: skip them
        finite = {k.lower(): float(v) for k, v in metrics.items() if isinstance(v, Real) and math.isfinite(v)}
        if finite:
            with self._lock:
                dimensions = {**self._dimensions, **labels}
            self._backend.add_metrics(finite, dimensions)

    def _send_span(self, name: str, span_id: str, parent: str | None, begun: datetime, ok: bool, attributes: dict):
        if self._backend is None:
            return
        with self._lock:
            values: dict[str, Any] = dict(self._dimensions)
        values.update({k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in attributes.items()})
        ended = datetime.now(timezone.utc)
        span = Span(name, self.trace_id, span_id, parent, begun, ended, ok, self._redactor.scrub(values))
        self._backend.send_span(span)

    def _start(self, backend: Backend | None, endpoint: str) -> None:
        """Export through ``backend`` (``None``: console only) to ``endpoint``, and route the
        component's loggers through redaction to it and to the console."""
        self._backend, self._endpoint = backend, endpoint
        self._route = logs.Route(self._prepare, None if backend is None else backend.log_handler)
        logs.attach(self.logger(), self._route, info=backend is not None)

    def _shut_down(self, backend: Backend) -> None:
        """Stop the exporters, waiting at most ``flush_timeout``; past it they send nothing more
        and end on their own, removing the SDK's log filter as they do. One warning on loss."""
        done = threading.Event()

        def shut_down() -> None:
            try:
                backend.shutdown()
            except Exception as e:  # telemetry must never be why a job fails
                backend.failures.last = f"{type(e).__name__}: {e}"
            finally:
                backend.failures.remove()
                done.set()

        threading.Thread(target=shut_down, name="telemetry-close", daemon=True).start()
        in_time = done.wait(self.flush_timeout)
        error = backend.failures.last
        if not in_time:
            backend.abandon()
        # Nothing is retried (no local storage): the SDKs' "Retrying" wording would mislead.
        error = error.removeprefix("Retrying due to ").removesuffix(" Retrying.").strip()
        causes = [] if in_time else [f"the flush did not finish within {self.flush_timeout:g} s"]
        causes += [f"last error: {self._redactor(error)[:300]}"] if error else []
        if causes:
            _log.warning(
                "telemetry of %s: records were lost, not delivered to Application Insights at %s (%s); "
                "the job itself is not affected",
                self.component,
                self._endpoint,
                "; ".join(causes),
            )


def _new_span_id() -> str:
    return uuid.uuid4().hex[:16]
