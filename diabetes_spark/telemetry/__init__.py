"""Application Insights telemetry of one job run, through OpenCensus (``opencensus-ext-azure``, the
default) or OpenTelemetry (``azure-monitor-opentelemetry-exporter``, the extra ``opentelemetry``).

:func:`start` returns a :class:`Telemetry` for a component (``Train_Orchestrator``,
``Batch_Score_Orchestrator``). With a connection string it sends, all under one operation id:

* logs of the component logger and its per-step children: messages, and exceptions with their
  stack trace, each with the run's custom dimensions and trace/span ids;
* a request for the run and a dependency per step, success or failure;
* custom metrics: row counts, model metrics, step durations.

Without one, everything goes to standard logging only: no exporter, no thread, no network.

Telemetry never fails a job: the configuration is checked once, at :func:`start` (a bad key is a
:class:`~diabetes_spark.errors.ConfigurationError` there, before any work); later, an endpoint that
is down, slow or answering errors only costs records, which :meth:`Telemetry.close` reports in one
warning after at most ``flush_timeout`` seconds. Nothing is spooled to disk and the SDK's own
usage statistics (statsbeat) are off. Secret values are replaced by ``[REDACTED]`` in every
message, dimension and attribute, also in their URL-encoded and base64 forms.

Modules: :mod:`.core` (the backend-neutral session), :mod:`.logs` (routing of log records),
:mod:`.config` (the connection string), :mod:`.backend` (what a backend is, and which exist),
:mod:`.opencensus` with :mod:`.opencensus_sdk`, and :mod:`.opentelemetry` (the two backends).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from diabetes_spark.telemetry import backend as _backends
from diabetes_spark.telemetry.config import parse_connection_string
from diabetes_spark.telemetry.core import (
    COMPONENT_INGEST,
    COMPONENT_SCORE,
    COMPONENT_TRAIN,
    ENV_CONNECTION_STRING,
    RUN_DURATION_METRIC,
    STEP_DURATION_METRIC,
    VERSION_DIMENSION,
    Telemetry,
)

ENV_BACKEND = _backends.ENV_BACKEND
BACKENDS = tuple(_backends.BACKENDS)

__all__ = [
    "COMPONENT_INGEST",
    "COMPONENT_SCORE",
    "COMPONENT_TRAIN",
    "ENV_CONNECTION_STRING",
    "RUN_DURATION_METRIC",
    "STEP_DURATION_METRIC",
    "VERSION_DIMENSION",
    "ENV_BACKEND",
    "BACKENDS",
    "Telemetry",
    "start",
]


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
        component: The component, also the cloud role name and the logger name
            (:data:`COMPONENT_TRAIN`, :data:`COMPONENT_SCORE`).
        connection_string: ``InstrumentationKey=...;IngestionEndpoint=...`` or a bare instrumentation
            key (a GUID; it becomes ``InstrumentationKey=<key>``). ``None`` reads
            ``$APPLICATIONINSIGHTS_CONNECTION_STRING``; empty means console only.
        secrets: Values to redact from everything sent or logged (the connection string always is).
        dimensions: Custom dimensions for every record, e.g. ``databricks_job_id``.
        flush_timeout: The most seconds :meth:`Telemetry.close` spends delivering what is buffered.
        backend: ``opencensus`` or ``opentelemetry``; ``None`` or empty reads
            ``$DIABETES_SPARK_TELEMETRY_BACKEND``, else ``opencensus``.
        credential: For ``Authorization=AAD`` with ``opentelemetry``: an ``azure.core``
            ``TokenCredential`` (``None``: ``azure.identity.DefaultAzureCredential``).

    Raises:
        ConfigurationError: A malformed connection string or key (named, never the value), an
            unknown backend, ``Authorization=AAD`` with ``opencensus``, or ``opentelemetry``
            without its extra installed.
    """
    source = "passed to telemetry.start"
    if connection_string is None:
        connection_string, source = os.environ.get(ENV_CONNECTION_STRING), f"${ENV_CONNECTION_STRING}"
    name = _backends.resolve(backend)
    telemetry = Telemetry(component, secrets=secrets, dimensions=dimensions, flush_timeout=flush_timeout)
    if connection_string and connection_string.strip():
        connection = parse_connection_string(connection_string, source)
        _backends.check(name, connection)
        telemetry.add_secrets([connection_string])
        telemetry._export_to(name, connection, credential)
    telemetry._install_logging()
    return telemetry
