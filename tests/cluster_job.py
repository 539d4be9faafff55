"""Ingest, train and batch score against a Spark standalone master, in a process of its own.

The test suite's session is ``local[2]``, and a JVM holds one SparkContext, so the cluster run needs
its own driver process. Run as ``python tests/cluster_job.py SPEC.json``; the spec names the master,
an output folder and the secrets to put into the session's configuration. The job writes
``result.json`` into the output folder (job summaries, the application id, the UI's view of the
environment) and leaves the Delta tables, the MLflow store and the event log there for the test.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import TEST_SPARK_CONF
from diabetes_spark import adls, jobs
from diabetes_spark.params import IngestParams, ScoreParams, TrainParams
from diabetes_spark.session import get_spark
from tests.standalone import SHORT_LIVED_JVM

#: The two scoring paths: a linear model scored as one Column expression from its metadata, and a
#: tree model loaded from MLflow and scored with ``PipelineModel.transform`` (a few small trees).
MODELS: dict[str, dict[str, Any]] = {
    "linear": {"estimator": "linear"},
    "forest": {"estimator": "random_forest", "num_trees": 5, "max_depth": 3},
}
EXPERIMENT = "cluster-run"
MODEL_PREFIX = "cluster_check"
BATCH_ID = "cluster-batch"

#: The suite's settings (so local and cluster runs partition alike), with small driver and executors.
CLUSTER_CONF = {
    **TEST_SPARK_CONF,
    "spark.driver.memory": "1g",
    "spark.executor.memory": "1g",
    "spark.driver.extraJavaOptions": SHORT_LIVED_JVM,
    "spark.executor.extraJavaOptions": SHORT_LIVED_JVM,
}


def run_pipeline(spark: Any, out: Path, *, home: Path) -> dict[str, Any]:
    """Ingest the sample, train both models on the Delta table and score the sample batch with each.

    The same function runs on the cluster and, in the test, locally, so both runs do the same steps.
    Tables go under ``out``, MLflow runs and models into the store under ``home``.
    """
    raw = str(out / "raw")
    summary: dict[str, Any] = {
        "ingest": jobs.run_ingest(spark, IngestParams(source="sample:diabetes.csv", table=raw, mode="overwrite"))
    }
    for kind, options in MODELS.items():
        name = f"{MODEL_PREFIX}_{kind}"
        train = TrainParams(training_data=raw, experiment=EXPERIMENT, model_name=name, **options)
        summary[f"train_{kind}"] = jobs.run_training(spark, train, home=home)
        score = ScoreParams(
            input="sample:scoring_batch.csv",
            output=str(out / f"predictions_{kind}"),
            model_name=name,
            experiment=EXPERIMENT,
            batch_id=BATCH_ID,
        )
        summary[f"score_{kind}"] = jobs.run_batch_scoring(spark, score, home=home)
    return summary


def _ui_environment(spark: Any) -> dict[str, Any]:
    """The Spark UI's environment page, as its REST API serves it (what a user would see)."""
    url = spark.sparkContext.uiWebUrl
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/environment", timeout=30) as response:
        return json.load(response)


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    out = Path(spec["out"])
    secrets = spec["secrets"]
    account = spec["account"]
    conf = {
        **CLUSTER_CONF,
        "spark.ui.enabled": "true",
        "spark.ui.port": str(spec["ui_port"]),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": str(out / "events"),
        # Uncompressed, so the test can search it; redaction happens before compression anyway.
        "spark.eventLog.compress": "false",
        # Secrets as a cluster would carry them: the account key and a SAS token as Hadoop settings,
        # a storage connection string and a SAS URL handed to the executors' environment.
        f"spark.hadoop.{adls.adls_conf_key(account)}": secrets["account_key"],
        f"spark.hadoop.fs.azure.sas.fixed.token.{account}.dfs.core.windows.net": secrets["sas_token"],
        "spark.executorEnv.AZURE_STORAGE_CONNECTION_STRING": secrets["connection_string"],
        "spark.executorEnv.SCORING_INPUT_URL": secrets["sas_url"],
    }
    (out / "events").mkdir(parents=True, exist_ok=True)
    spark = get_spark("diabetes-spark-cluster", master=spec["master"], conf=conf)
    try:
        # As the notebooks do it: the key read from a secret scope, set in the session at run time.
        adls.configure_adls(spark, spec["runtime_account"], secrets["runtime_key"])
        began = time.monotonic()
        summary = run_pipeline(spark, out, home=out / "mlflow")
        result = {
            "summary": summary,
            "pipeline_seconds": time.monotonic() - began,
            "application_id": spark.sparkContext.applicationId,
            "master": spark.sparkContext.master,
            "ui_environment": _ui_environment(spark),
        }
    finally:
        spark.stop()
    (out / "result.json").write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
