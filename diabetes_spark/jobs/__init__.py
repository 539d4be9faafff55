"""The three jobs the notebooks and the console script call, one module each, each a short list of
named steps: read, validate, act (fit or score), write, record.

:mod:`.ingest`, :mod:`.train` and :mod:`.score` are the jobs, :mod:`.incremental` scoring's
``incremental`` mode (with :mod:`.stream`, its streaming query); :mod:`.tables` holds the steps
they share (read and validate an input, write and reconcile); :mod:`.recorder` sends a step's numbers
to MLflow and telemetry in one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diabetes_spark.jobs import score
from diabetes_spark.jobs.ingest import run_ingest
from diabetes_spark.jobs.train import run_training

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from diabetes_spark.params import ScoreParams


def run_batch_scoring(spark: SparkSession, params: ScoreParams, **kwargs: Any) -> dict[str, Any]:
    """Batch scoring: the whole input as one batch (:func:`.score.run_batch_scoring`), or with
    ``params.incremental`` only what is new in it (:func:`.incremental.run_incremental_scoring`)."""
    if params.incremental == "true":
        from diabetes_spark.jobs.incremental import run_incremental_scoring

        return run_incremental_scoring(spark, params, **kwargs)
    return score.run_batch_scoring(spark, params, **kwargs)


__all__ = ["run_ingest", "run_training", "run_batch_scoring"]
