"""What a telemetry backend is to the backend-neutral session (:mod:`.core`), and which exist.

A backend is a small adapter over one SDK. It gets finished spans, metric values and, through its
log handler, prepared log records (redacted, with dimensions and trace ids), and turns them into
Application Insights envelopes; :meth:`Backend.close` delivers what it holds within a deadline and
says what was lost. Adding a backend is a module with a ``start(settings)`` and a line in
:data:`BACKENDS`; the jobs never name one.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import TELEMETRY_BACKENDS

if TYPE_CHECKING:
    from diabetes_spark.redaction import Redactor
    from diabetes_spark.telemetry.config import Connection

__all__ = [
    "Backend",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "ENV_BACKEND",
    "BatchWarnings",
    "FinishedSpan",
    "Outcome",
    "Settings",
    "Spec",
    "check",
    "resolve",
    "run_bounded",
    "start",
]

#: Where :func:`resolve` reads the backend when the job's ``telemetry_backend`` is empty.
ENV_BACKEND = "DIABETES_SPARK_TELEMETRY_BACKEND"
DEFAULT_BACKEND = "opencensus"  # the design asks for OpenCensus


@dataclass(frozen=True)
class Spec:
    """A backend: its adapter module, the module its extra installs, whether it can use Entra ID."""

    module: str
    requires: str
    extra: str
    entra_id: bool


BACKENDS: dict[str, Spec] = {
    "opencensus": Spec("diabetes_spark.telemetry.opencensus", "opencensus.ext.azure", "", entra_id=False),
    "opentelemetry": Spec(
        "diabetes_spark.telemetry.opentelemetry",
        "azure.monitor.opentelemetry.exporter",
        "opentelemetry",
        entra_id=True,
    ),
}
assert tuple(BACKENDS) == TELEMETRY_BACKENDS, "params.TELEMETRY_BACKENDS names the backends registered here"


class BatchWarnings(logging.Filter):
    """An SDK's warnings about the batch the current thread sends go to that batch's account (the
    callable ``taker`` returns, ``None`` outside a send) instead of one console line per batch: the
    session reports a loss once. Records logged outside a send pass."""

    def __init__(self, taker: Callable[[], Callable[[str], Any] | None]) -> None:
        super().__init__()
        self._taker = taker

    def filter(self, record: logging.LogRecord) -> bool:
        take = self._taker()
        if take is None:
            return True
        if record.levelno >= logging.WARNING:
            try:
                message = record.getMessage()
            except Exception:  # a malformed SDK message: keep its template
                message = str(record.msg)
            take(message)
        return False


@dataclass(frozen=True)
class FinishedSpan:
    """A run (``server``: an App Insights request) or a step (a dependency), ended."""

    name: str
    trace_id: str
    span_id: str
    parent: str | None
    begun: datetime
    ended: datetime
    ok: bool
    attributes: Mapping[str, Any]
    server: bool


@dataclass(frozen=True)
class Settings:
    """What a backend needs to start for one session."""

    component: str
    trace_id: str
    redactor: Redactor
    connection: Connection
    flush_timeout: float
    #: An ``azure.core`` ``TokenCredential`` for ``Authorization=AAD`` (``None``: the backend's default).
    credential: Any = None

    @property
    def request_timeout(self) -> float:
        """Seconds per HTTP request: the flush timeout, within [0.5, 10]."""
        return max(min(self.flush_timeout, 10.0), 0.5)


@dataclass(frozen=True)
class Outcome:
    """What a backend's close delivered: records handed to it, those the endpoint did not accept
    (failed, dropped, or still in flight at the deadline), those dropped because a buffer was
    full (when the SDK tells), and the last transport error."""

    handed: int
    lost: int
    dropped: int = 0
    last_error: str = ""


class Backend(Protocol):
    """The exporters of one session."""

    #: Receives the session's prepared log records (``custom_dimensions``, ``traceId``, ``spanId``).
    log_handler: logging.Handler

    def send_span(self, span: FinishedSpan) -> None:
        """Queue a finished span; never blocks on the network."""

    def add_metrics(self, values: Mapping[str, float], labels: Mapping[str, str]) -> None:
        """Queue finite metric values with their dimensions; never blocks on the network."""

    def close(self, timeout: float) -> Outcome:
        """Deliver what is held and stop, returning within ``timeout`` seconds (see :func:`run_bounded`)."""


def resolve(name: str | None) -> str:
    """The backend to use: ``name``, else ``$DIABETES_SPARK_TELEMETRY_BACKEND``, else ``opencensus``.

    Raises:
        ConfigurationError: Not a known backend.
    """
    source = "telemetry_backend"
    if not (name or "").strip():
        name, source = os.environ.get(ENV_BACKEND, ""), f"${ENV_BACKEND}"
    chosen = (name or "").strip().lower() or DEFAULT_BACKEND
    if chosen not in BACKENDS:
        raise ConfigurationError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return chosen


def check(name: str, connection: Connection) -> None:
    """Fail before any work if ``name`` cannot export to ``connection``.

    Raises:
        ConfigurationError: ``Authorization=AAD`` with a backend that cannot send with a token, or
            the backend's extra is not installed.
    """
    spec = BACKENDS[name]
    if connection.entra_id and not spec.entra_id:
        able = ", ".join(n for n, s in BACKENDS.items() if s.entra_id)
        raise ConfigurationError(
            f"the Application Insights connection string says Authorization=AAD (Entra ID), which telemetry "
            f"backend {name} cannot send with; set telemetry_backend (or ${ENV_BACKEND}) to {able}"
        )
    if _missing(spec.requires):
        raise ConfigurationError(
            f"telemetry backend {name} needs {spec.requires}, which is not installed: "
            f"pip install diabetes_spark[{spec.extra}]"
        )


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # a parent package is absent
        return True


def start(name: str, settings: Settings) -> Backend | None:
    """The backend's exporters for one session (``None``, with a warning, when the SDK cannot start them)."""
    try:
        return importlib.import_module(BACKENDS[name].module).start(settings)
    except Exception as e:  # the configuration was valid: an SDK problem must not stop the job
        logging.getLogger("diabetes_spark.telemetry").warning(
            "telemetry of %s goes to the console only: the %s exporters could not start (%s: %s)",
            settings.component,
            name,
            type(e).__name__,
            settings.redactor(str(e)),
        )
        return None


def run_bounded(calls: Sequence[Callable[[], object]], timeout: float, name: str = "telemetry-flush") -> list[bool]:
    """Run ``calls`` in parallel on daemon threads; wait for them at most ``timeout`` seconds in all.

    Returns, per call, whether it finished in time. A call still running is left behind: a
    backend makes sure such a call ends soon without sending (its records count as lost).
    """
    deadline = time.monotonic() + timeout
    threads = [threading.Thread(target=call, name=f"{name}-{i}", daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    return [not thread.is_alive() for thread in threads]
