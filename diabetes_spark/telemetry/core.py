"""The backend-neutral session of one job run: dimensions, a span per step, metrics, redaction,
the failure sent once, and the flush policy (a bounded close, one warning on loss). A backend
adapter (:mod:`.backend`) exports."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark._version import __version__
from diabetes_spark.redaction import Redactor
from diabetes_spark.telemetry import backend, logs

if TYPE_CHECKING:
    from diabetes_spark.telemetry.backend import Backend, Outcome
    from diabetes_spark.telemetry.config import Connection

__all__ = [
    "Telemetry",
    "COMPONENT_TRAIN",
    "COMPONENT_SCORE",
    "COMPONENT_INGEST",
    "ENV_CONNECTION_STRING",
    "STEP_DURATION_METRIC",
    "RUN_DURATION_METRIC",
    "VERSION_DIMENSION",
]

COMPONENT_TRAIN = "Train_Orchestrator"
COMPONENT_SCORE = "Batch_Score_Orchestrator"
COMPONENT_INGEST = "Ingest_Orchestrator"
#: The command of each component, as its console lines name it (``score: write ...``).
_COMMANDS = {COMPONENT_TRAIN: "train", COMPONENT_SCORE: "score", COMPONENT_INGEST: "ingest"}
#: Where :func:`start` reads the connection string when none is passed (the SDKs' own convention).
ENV_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
#: Custom metric recorded for every step, with the step's name in dimension ``step``.
STEP_DURATION_METRIC = "step_duration_seconds"
RUN_DURATION_METRIC = "run_duration_seconds"
VERSION_DIMENSION = "diabetes_spark_version"

_log = logging.getLogger("diabetes_spark.telemetry")  # the package's logger, whichever module logs


class Telemetry:
    """Logs, spans and metrics of one job run; see :func:`start`.

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
        self._local = threading.local()
        self._rows: dict[str, int] = {}
        self._sent_errors: list[BaseException] = []
        self._failed = False
        self._closed = False
        self._sdk: Backend | None = None
        self._endpoint = ""
        self.backend = ""  # the backend exporting, once started
        self._logging_state: tuple[logging.Logger, list[logging.Handler]] | None = None
        self.set_dimensions(**(dimensions or {}))

    @property
    def exporting(self) -> bool:
        """True when records go to Application Insights (False: console only)."""
        return self._sdk is not None

    # -- public API -----------------------------------------------------------------------------

    def logger(self, step: str | None = None) -> logging.Logger:
        """The component logger, or the child logger of ``step`` (``<component>.<step>``)."""
        return logging.getLogger(self.component if step is None else f"{self.component}.{step}")

    @contextmanager
    def span(self, step: str, **attributes: Any) -> Iterator[logging.Logger]:
        """Time one step as a span (an App Insights dependency) and a duration metric.

        Yields the step's logger. The console gets a line as the step starts and one, with the
        elapsed time and the rows of :meth:`rows`, as it ends (App Insights only the latter, as a
        trace). An exception is logged with its stack trace, marks the span and the run failed, and
        propagates.
        """
        log = self.logger(step)
        span_id, begun, clock = _new_span_id(), datetime.now(timezone.utc), time.perf_counter()
        label = f"{_COMMANDS.get(self.component, self.component)}: {step}"
        log.info("%s ...", label, extra={logs.CONSOLE_ONLY: True})
        stack = self._stack()
        stack.append(span_id)
        ok = True
        try:
            yield log
            elapsed = time.perf_counter() - clock
            line = logs.done_line(label, self._rows.pop(span_id, None), elapsed)
            log.info("step %s done in %.2f s", step, elapsed, extra={logs.CONSOLE_MESSAGE: line})
        except BaseException as error:
            ok = False
            self._failed = True
            if isinstance(error, Exception) and not self._was_sent(error):
                log.exception(
                    "step %s failed after %.2f s", step, time.perf_counter() - clock, extra={logs.SKIP_CONSOLE: True}
                )
            raise
        finally:
            stack.pop()
            self._record({STEP_DURATION_METRIC: time.perf_counter() - clock}, {"step": step})
            self._export_span(step, span_id, self._root_span_id, begun, ok, {**attributes, "step": step}, server=False)

    def rows(self, count: int) -> None:
        """The rows the current step handled, for its console line."""
        self._rows[self._current_span_id()] = int(count)

    def set_dimensions(self, **dimensions: str) -> None:
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
            self._dimensions = {k: self._redactor(v) for k, v in self._dimensions.items()}

    def record(self, metrics: Mapping[str, float]) -> None:
        """Send custom metrics (``rows_in``, ``rmse``, ...) with the current dimensions.

        Values that are not finite numbers are skipped (App Insights rejects NaN and infinity).
        Names are sent in lower case (``psi_bmi``): OpenTelemetry's are case-insensitive and its
        SDK lower-cases them, so both backends name a metric alike.
        """
        self._record(metrics, {})

    def fail(self, error: BaseException) -> None:
        """Mark the run failed and send ``error`` with its stack trace, unless a step already did."""
        self._failed = True
        if isinstance(error, Exception) and not self._was_sent(error):
            log = self.logger()
            name = type(error).__name__
            log.error("%s failed: %s: %s", self.component, name, error, exc_info=error, extra={logs.SKIP_CONSOLE: True})

    def close(self) -> None:
        """End the run's request and deliver everything buffered, within ``flush_timeout`` seconds.

        Never raises and never waits longer; records that could not be delivered are reported in
        one warning. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        except Exception as e:  # telemetry must never be why a job fails
            _log.warning("telemetry of %s could not be closed cleanly: %s", self.component, self._redactor(str(e)))

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        self.close()

    # -- records ------------------------------------------------------------------------------

    def _stack(self) -> list[str]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _current_span_id(self) -> str:
        stack = self._stack()
        return stack[-1] if stack else self._root_span_id

    def _snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._dimensions)

    def _was_sent(self, error: BaseException) -> bool:
        """True if ``error`` was logged already; otherwise remember it as logged now."""
        with self._lock:
            if any(error is sent for sent in self._sent_errors):
                return True
            self._sent_errors.append(error)
            return False

    def _prepare(self, record: logging.LogRecord) -> None:
        """Redact the record and attach dimensions, step and trace ids (once per record)."""
        if getattr(record, "_telemetry_prepared", False):
            return
        record._telemetry_prepared = True  # type: ignore[attr-defined]
        redact = self._redactor
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if not getattr(record, logs.SKIP_CONSOLE, False) and self._was_sent(error):
                record.exc_info, record.exc_text = None, None  # sent already: keep the message only
            elif not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        dimensions = self._snapshot()
        if record.name.startswith(self.component + "."):
            dimensions["step"] = record.name[len(self.component) + 1 :]
        own = getattr(record, "custom_dimensions", None)
        if isinstance(own, Mapping):
            dimensions.update({str(k): str(v) for k, v in own.items()})
        record.custom_dimensions = redact.scrub(dimensions)  # type: ignore[attr-defined]
        record.traceId, record.spanId = self.trace_id, self._current_span_id()  # type: ignore[attr-defined]

    def _record(self, metrics: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        if self._sdk is None:
            return
        good = {}
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isfinite(number):
                good[name.lower()] = number
            else:
                _log.debug("metric %s=%r is not a finite number: not sent", name, value)
        if good:
            self._sdk.add_metrics(good, {**self._snapshot(), **labels})

    def _export_span(
        self,
        name: str,
        span_id: str,
        parent: str | None,
        begun: datetime,
        ok: bool,
        attributes: Mapping[str, Any],
        *,
        server: bool,
    ) -> None:
        if self._sdk is None:
            return
        values: dict[str, Any] = self._snapshot()
        values.update({k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in attributes.items()})
        values = self._redactor.scrub(values)
        ended = datetime.now(timezone.utc)
        span = backend.FinishedSpan(name, self.trace_id, span_id, parent, begun, ended, ok, values, server)
        self._sdk.send_span(span)

    # -- set-up and shut-down -------------------------------------------------------------------

    def _export_to(self, name: str, connection: Connection, credential: Any = None) -> None:
        """Start backend ``name``'s exporters for this run; console only if they cannot start."""
        self._endpoint, self.backend = connection.endpoint, name
        settings = backend.Settings(
            self.component, self.trace_id, self._redactor, connection, self.flush_timeout, credential
        )
        self._sdk = backend.start(name, settings)

    def _install_logging(self) -> None:
        """Route the component's loggers through redaction to App Insights and the console."""
        logger = self.logger()
        preparer = logs.Preparer(self._prepare)
        relay = logs.ConsoleRelay()
        relay.addFilter(preparer)
        handlers: list[logging.Handler] = [relay]
        if self._sdk is not None:
            self._sdk.log_handler.addFilter(logs.NOT_EXPORTED)
            self._sdk.log_handler.addFilter(preparer)
            handlers.insert(0, self._sdk.log_handler)
        relay.threshold = logs.attach(logger, handlers, info=self._sdk is not None)
        self._logging_state = (logger, handlers)

    def _close(self) -> None:
        begun, clock = self._started
        try:
            self._record({RUN_DURATION_METRIC: time.perf_counter() - clock}, {})
            self._export_span(self.component, self._root_span_id, None, begun, not self._failed, {}, server=True)
        finally:
            if self._logging_state is not None:
                logs.detach(*self._logging_state)
            with self._lock:
                self._sent_errors.clear()
        if self._sdk is not None:
            self._report(self._sdk.close(self.flush_timeout))

    def _report(self, outcome: Outcome) -> None:
        """One warning if anything was lost, with the last transport error (redacted) as its cause."""
        if outcome.lost <= 0:
            return
        # Nothing is retried (no local storage): an SDK's "Retrying" wording would mislead.
        error = outcome.last_error.removeprefix("Retrying due to ").removesuffix(" Retrying.").strip()
        cause = f"last error: {self._redactor(error)[:300]}" if error else f"no answer within {self.flush_timeout:g} s"
        if outcome.dropped:
            cause += f"; {outcome.dropped} dropped because too many records were waiting"
        _log.warning(
            "telemetry of %s: %d of %d records were lost, not delivered to Application Insights at %s (%s); "
            "the job itself is not affected",
            self.component,
            outcome.lost,
            outcome.handed,
            self._endpoint,
            cause,
        )


def _new_span_id() -> str:
    return uuid.uuid4().hex[:16]
