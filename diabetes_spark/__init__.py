"""diabetes_spark: Spark ML training and batch scoring of diabetes progression over Delta tables.

The public API is this module's ``__all__``: the three jobs the notebooks and the console script
call, their parameters, and the errors they raise on purpose. The module names are the map of
where a change goes; dependencies point down this list, never up:

* faces: ``cli`` (the ``diabetes-spark`` console script), ``commands`` (its ``promote``, ``rollback``,
  ``rescore`` and ``replay`` subcommands), ``console`` (its stderr and stdout), ``notebook`` (the notebooks' shared
  context, the local notebook runner, the demo), ``local_dbutils`` (``dbutils`` off Databricks),
  ``connect_server`` (the command of a local Spark Connect server), ``deploy`` (``setup-secrets``);
* the Spark session: ``session`` (Databricks', a Spark Connect server's, or local Spark with Delta),
  ``jvm_cache`` (the local JVM's start-up cache); only faces and jobs import them;
* jobs: ``jobs.ingest``, ``jobs.train``, ``jobs.score``, each read -> validate -> act -> write ->
  record; ``jobs.incremental`` (scoring only what is new, through Structured Streaming) with
  ``jobs.stream`` (its streaming query: position, start, what a micro-batch covers, failures);
  ``jobs.lifecycle`` (promote, rollback) and ``jobs.rescore`` (rescore, replay), the commands a
  person runs on a model's aliases and batches; ``jobs.tables`` (the steps they share),
  ``jobs.recorder`` (a step's numbers to MLflow and telemetry in one call);
* the model: ``features`` (Spark ML stages), ``training`` (split, fit, tune), ``evaluation``
  (metrics, report artifacts), ``scoring`` (compiled scoring, lineage), ``drift`` (profile,
  population stability index), ``spark_models`` (the model to and from MLflow), ``registry``
  (MLflow location, versions, aliases), ``validation`` (thresholds with MLflow's semantics, the
  validation modes, the verdict), ``promotion`` (the champion gate, promote, rollback), ``ledger``
  (the alias ledger: every move of champion and challenger), ``provenance`` (the exact input a run
  read, on its MLflow run), ``shadow`` (the challenger beside the champion on a batch, and their
  comparison);
* data: ``schemas`` (validation, rejects with reasons), ``storage`` (table references, reads,
  Delta versions and history), ``delta_writes`` (retried, batch-idempotent Delta writes), ``adls``
  (ADLS Gen2 credentials), ``data`` (the shipped samples);
* edges and base: ``telemetry`` (Application Insights, one module per backend), ``params`` (job
  parameters: names, defaults, validation) with ``param_text`` (widget and flag strings to
  parameters) and ``thresholds`` (``validation_thresholds`` read), ``errors`` (the exceptions, and the one place foreign
  errors, Spark's, Delta's, py4j's, MLflow's and the OS's, are classified) with ``jvm_errors`` (a Spark JVM out
  of memory or dead, told and worded), ``redaction`` (the one secret scrubber),
  ``runtime`` (where the code runs: probes, and the one environment helper).

The job functions import pyspark and MLflow, so they are loaded on first use: ``import
diabetes_spark`` works where only the wheel is installed (``setup-secrets`` on a laptop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diabetes_spark._version import __version__
from diabetes_spark.errors import (
    ConfigurationError,
    DiabetesSparkError,
    InputError,
    NotebookError,
    OutputError,
    ParamError,
    ReconciliationError,
    RegistryError,
    RejectThresholdError,
    SchemaError,
    TrainingError,
    WriteConflictError,
)
from diabetes_spark.params import IngestParams, NotebookParams, ScoreParams, TrainParams

if TYPE_CHECKING:
    from diabetes_spark.jobs import run_batch_scoring, run_ingest, run_training

__all__ = [
    "__version__",
    "run_ingest",
    "run_training",
    "run_batch_scoring",
    "IngestParams",
    "TrainParams",
    "ScoreParams",
    "NotebookParams",
    "DiabetesSparkError",
    "ParamError",
    "InputError",
    "SchemaError",
    "RejectThresholdError",
    "ReconciliationError",
    "WriteConflictError",
    "TrainingError",
    "RegistryError",
    "ConfigurationError",
    "NotebookError",
    "OutputError",
]

_JOBS = ("run_ingest", "run_training", "run_batch_scoring")


def __getattr__(name: str) -> Any:
    """The job functions, imported from :mod:`diabetes_spark.jobs` on first use."""
    if name in _JOBS:
        from diabetes_spark import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'diabetes_spark' has no attribute {name!r}")
