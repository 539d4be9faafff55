"""diabetes_spark: Spark ML training and batch scoring of diabetes progression over Delta tables.

The public API: the three jobs the notebooks and the console script call, their parameters, and
the errors they raise on purpose. Everything else is reached through its module; the module names
are the map of where a change goes:

* entry points: ``jobs`` (the three jobs, as named steps), ``steps`` (the steps' bodies),
  ``notebook`` (the notebooks' context, local runner, demo), ``cli`` (the console script) and
  ``deploy`` (``setup-secrets``);
* where code runs: ``session`` (the Spark session: Databricks', Spark Connect's or local),
  ``connect_server`` (Spark Connect checks, a local server), ``jvm_cache`` (local start-up cache),
  ``local_dbutils`` (``dbutils`` off Databricks), ``redaction`` (secrets out of everything);
* data: ``params``, ``schemas`` (validation and rejects), ``storage`` (table references, reads,
  Delta history), ``adls`` (ADLS Gen2 credentials), ``delta_writes`` (committed, counted, retried writes);
* the model: ``features``, ``training``, ``evaluation`` (metrics, reports), ``spark_models`` (the
  model to and from MLflow, classic and Spark Connect), ``registry`` (MLflow location, versions,
  aliases), ``promotion`` (the champion gate), ``scoring`` (compiled scoring,
  lineage), ``drift`` (profile, stability index, batch monitor);
* ``telemetry``: Application Insights, one adapter per backend; ``errors``: the exceptions.

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
]

_JOBS = ("run_ingest", "run_training", "run_batch_scoring")


def __getattr__(name: str) -> Any:
    """The job functions, imported from :mod:`diabetes_spark.jobs` on first use."""
    if name in _JOBS:
        from diabetes_spark import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'diabetes_spark' has no attribute {name!r}")
