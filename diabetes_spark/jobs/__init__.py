"""The three jobs the notebooks and the console script call, one module each, each a short list of
named steps: read, validate, act (fit or score), write, record.

:mod:`.ingest`, :mod:`.train` and :mod:`.score` are the jobs; :mod:`.tables` holds the steps they
share (read and validate an input, write and reconcile); :mod:`.recorder` sends a step's numbers to
MLflow and telemetry in one call.
"""

from __future__ import annotations

from diabetes_spark.jobs.ingest import run_ingest
from diabetes_spark.jobs.score import run_batch_scoring
from diabetes_spark.jobs.train import run_training

__all__ = ["run_ingest", "run_training", "run_batch_scoring"]
