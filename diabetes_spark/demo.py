"""The demo: the whole loop on the shipped sample through the two notebooks (ingest, train, batch
score), run by ``diabetes-spark demo`` and ``make run`` off Databricks.

While the JVM ingests, a thread opens the MLflow store and imports the report plots' library, so the
training notebook does not wait for them.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark import params as job_params
from diabetes_spark.errors import ParamError
from diabetes_spark.notebook import NOTEBOOKS, run_notebook
from diabetes_spark.runtime import local_home

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from diabetes_spark.registry import MlflowLocation


_log = logging.getLogger(__name__)


def run_demo(spark: SparkSession, *, notebooks: Path | None = None, home: Path | None = None) -> dict[str, Any]:
    """The whole loop on the shipped sample through the two notebooks: ingest, train, batch score.

    The notebooks are those in ``notebooks`` when it holds them, else the ones shipped in the wheel.

    Returns:
        The three summaries, where the tables are, the command that starts the MLflow UI, and the
        address of the runs in its model-training view (MLflow 3's UI otherwise opens an experiment
        in its GenAI view).
    """
    from diabetes_spark import jobs
    from diabetes_spark.redaction import redact_url

    home = home or local_home()
    if notebooks is not None:
        missing = [name for name in NOTEBOOKS.values() if not (notebooks / name).is_file()]
        if missing:
            raise ParamError(
                f"--notebooks {notebooks} does not hold {' and '.join(missing)}: give the folder that holds both "
                "notebooks (e.g. the repository's notebooks/), or leave the flag out to run the shipped ones"
            )
    raw, predictions = str(home / "diabetes_raw"), str(home / "diabetes_predictions")
    # The ingest keeps the JVM busy and this process idle: meanwhile MLflow and matplotlib are imported.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-prepare") as pool:
        opened = pool.submit(_prepare, home)
        ingest = jobs.run_ingest(
            spark,
            job_params.IngestParams(source="sample:diabetes.csv", table=raw, mode="overwrite", max_reject_fraction=0.2),
        )
        store = opened.result().tracking_uri
    no_adls = {"storage_account_secret": ""}
    folder = notebooks or Path(".")
    train = json.loads(
        run_notebook(folder / NOTEBOOKS["train"], spark=spark, widgets={**no_adls, "training_data": raw}) or "{}"
    )
    score = run_notebook(
        folder / NOTEBOOKS["score"],
        spark=spark,
        widgets={**no_adls, "input": "sample:scoring_batch.csv", "output": predictions},
    )
    return {
        "ingest": ingest,
        "train": train,
        "score": json.loads(score or "{}"),
        "tables": {
            "raw": raw,
            "raw_rejects": raw + "_rejects",
            "predictions": predictions,
            "prediction_rejects": predictions + "_rejects",
        },
        "mlflow_ui": f"mlflow ui --backend-store-uri {store}" if store.startswith("sqlite:") else redact_url(store),
        "mlflow_runs": experiment_runs_url(train.get("experiment_id", "")),
    }


def _prepare(home: Path) -> MlflowLocation:
    """The demo's MLflow location, its store opened and the report plots' library imported ahead of
    training; a failure is left to the jobs, which report it."""
    from diabetes_spark import evaluation
    from diabetes_spark.registry import MlflowLocation

    location = MlflowLocation.from_environment(home)
    try:
        location.open_store()
        evaluation.pyplot()
    except Exception:  # an optimisation only: the jobs open the store again and report what fails
        _log.debug("MLflow store %s not opened ahead of training", location.tracking_uri, exc_info=True)
    return location


def experiment_runs_url(experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's page of an experiment's runs, in its model-training view."""
    return f"{ui}/#/experiments/{experiment_id}?workflowType=machine_learning"
