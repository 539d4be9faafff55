"""Application Insights telemetry of one job run, best effort, through OpenCensus (the default) or
OpenTelemetry (the extra ``opentelemetry``); docs/telemetry.md says what is sent. :func:`start`
checks the configuration before any work; after that a bad endpoint costs records, never the job,
and never more than ``flush_timeout`` at close. Modules: :mod:`.core` (the session), :mod:`.logs`,
:mod:`.config` (the connection string), one per backend (:mod:`.opencensus`, :mod:`.opentelemetry`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import TELEMETRY_BACKENDS
from diabetes_spark.telemetry.config import Connection, parse_connection_string
from diabetes_spark.telemetry.core import RUN_DURATION_METRIC, STEP_DURATION_METRIC, VERSION_DIMENSION, Telemetry

if TYPE_CHECKING:
    from diabetes_spark.telemetry.core import Backend

__all__ = [
    "BACKENDS",
    "COMPONENT_INGEST",
    "COMPONENT_SCORE",
    "COMPONENT_TRAIN",
    "ENV_BACKEND",
    "ENV_CONNECTION_STRING",
    "RUN_DURATION_METRIC",
    "STEP_DURATION_METRIC",
    "VERSION_DIMENSION",
    "Telemetry",
    "start",
]

COMPONENT_TRAIN = "Train_Orchestrator"
COMPONENT_SCORE = "Batch_Score_Orchestrator"
COMPONENT_INGEST = "Ingest_Orchestrator"
#: Where :func:`start` reads the connection string (the SDKs' own convention).
ENV_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
#: Where :func:`start` reads the backend when none is given.
ENV_BACKEND = "DIABETES_SPARK_TELEMETRY_BACKEND"
#: The backends, the first the default (the job parameter ``telemetry_backend`` names them too).
BACKENDS = TELEMETRY_BACKENDS


def start(
    component: str,
    *,
    connection_string: str | None = None,
    secrets: Iterable[str] = (),
    dimensions: Mapping[str, str] | None = None,
    flush_timeout: float = 10.0,
    backend: str | None = None,
    credential: Any = None,
) -> Telemetry:
    """Start the telemetry of one job run; close it (or use it as a context manager) at the end.

    Args:
        component: The component (:data:`COMPONENT_TRAIN`, ...): cloud role name and logger name.
        connection_string: A connection string or a bare instrumentation key; ``None`` reads
            ``$APPLICATIONINSIGHTS_CONNECTION_STRING``; empty means console only.
        secrets: Values to redact from everything sent or logged (the connection string always is).
        dimensions: Custom dimensions for every record, e.g. ``databricks_job_id``.
        flush_timeout: The most seconds :meth:`Telemetry.close` waits for delivery.
        backend: ``opencensus`` or ``opentelemetry``; empty reads ``$DIABETES_SPARK_TELEMETRY_BACKEND``.
        credential: For ``Authorization=AAD`` (``opentelemetry``): an ``azure.core`` ``TokenCredential``
            (``None``: ``azure.identity.DefaultAzureCredential``).

    Raises:
        ConfigurationError: A malformed connection string (named, never its value), an unknown
            backend, ``Authorization=AAD`` with ``opencensus``, or ``opentelemetry`` without its extra.
    """
    source = "passed to telemetry.start"
    if connection_string is None:
        connection_string, source = os.environ.get(ENV_CONNECTION_STRING), f"${ENV_CONNECTION_STRING}"
    name = _backend_name(backend)
    telemetry = Telemetry(component, secrets=secrets, dimensions=dimensions, flush_timeout=flush_timeout)
    exporters, endpoint = None, ""
    if connection_string and connection_string.strip():
        connection = parse_connection_string(connection_string, source)
        telemetry.add_secrets([connection_string])
        exporters, endpoint = _start_exporters(name, telemetry, connection, credential), connection.endpoint
    telemetry._start(exporters, endpoint)
    return telemetry


def _backend_name(name: str | None) -> str:
    """``name``, else ``$DIABETES_SPARK_TELEMETRY_BACKEND``, else the default, checked."""
    source = "telemetry_backend"
    if not (name or "").strip():
        name, source = os.environ.get(ENV_BACKEND, ""), f"${ENV_BACKEND}"
    chosen = (name or "").strip().lower() or BACKENDS[0]
    if chosen not in BACKENDS:
        raise ConfigurationError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return chosen


def _start_exporters(name: str, telemetry: Telemetry, connection: Connection, credential: Any) -> Backend | None:
    """Backend ``name``'s exporters, importing its SDK alone; ``None``, with a warning, when the
    SDK cannot start them (the configuration is valid: that must not stop the job).

    Raises:
        ConfigurationError: ``Authorization=AAD`` with ``opencensus``; ``opentelemetry`` not installed.
    """
    if name == "opencensus" and connection.entra_id:
        raise ConfigurationError(
            "the Application Insights connection string says Authorization=AAD (Entra ID), which telemetry "
            f"backend opencensus cannot send with; set telemetry_backend (or ${ENV_BACKEND}) to opentelemetry"
        )
    if name == "opencensus":
        from diabetes_spark.telemetry.opencensus import Exporters
    else:  # opentelemetry, the one other name _backend_name lets through
        try:
            from diabetes_spark.telemetry.opentelemetry import Exporters  # type: ignore[assignment]
        except ImportError as e:
            raise ConfigurationError(
                "telemetry backend opentelemetry needs azure-monitor-opentelemetry-exporter, which is not "
                "installed: pip install diabetes_spark[opentelemetry]"
            ) from e
    try:
        return Exporters(telemetry, connection, credential)
    except Exception as e:
        logging.getLogger("diabetes_spark.telemetry").warning(
            "telemetry of %s goes to the console only: the %s exporters could not start (%s: %s)",
            telemetry.component,
            name,
            type(e).__name__,
            telemetry._redactor(str(e)),
        )
        return None
