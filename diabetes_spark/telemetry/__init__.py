"""Application Insights telemetry of one job run, through OpenCensus (``opencensus-ext-azure``).

:func:`start` returns a :class:`Telemetry` for a component (``Train_Orchestrator``,
``Batch_Score_Orchestrator``). With a connection string it sends, all under one operation id:

* logs of the component logger and its per-step children (``AzureLogHandler``): messages, and
  exceptions with their stack trace, each with the run's custom dimensions and trace/span ids;
* a request for the run and a dependency per step (``AzureExporter``), success or failure;
* custom metrics (the OpenCensus metrics exporter): row counts, model metrics, step durations.

Without one, everything goes to standard logging only: no exporter, no thread, no network.

Telemetry never fails a job: the configuration is checked once, at :func:`start` (a bad key is a
:class:`~diabetes_spark.errors.ConfigurationError` there, before any work); later, an endpoint that
is down, slow or answering errors only costs records, which :meth:`Telemetry.close` reports in one
warning after at most ``flush_timeout`` seconds. Nothing is spooled to disk and the SDK's own
usage statistics (statsbeat) are off. Secret values are replaced by ``[REDACTED]`` in every
message, dimension and attribute, also in their URL-encoded and base64 forms.

Modules: :mod:`.core` (the backend-neutral session), :mod:`.logs` (routing of log records),
:mod:`.config` (the connection string), :mod:`.opencensus` and :mod:`.opencensus_sdk` (the backend).
"""

from __future__ import annotations

from diabetes_spark.telemetry.core import (
    COMPONENT_INGEST,
    COMPONENT_SCORE,
    COMPONENT_TRAIN,
    ENV_CONNECTION_STRING,
    RUN_DURATION_METRIC,
    STEP_DURATION_METRIC,
    VERSION_DIMENSION,
    Telemetry,
    start,
)

__all__ = [
    "COMPONENT_INGEST",
    "COMPONENT_SCORE",
    "COMPONENT_TRAIN",
    "ENV_CONNECTION_STRING",
    "RUN_DURATION_METRIC",
    "STEP_DURATION_METRIC",
    "VERSION_DIMENSION",
    "Telemetry",
    "start",
]
