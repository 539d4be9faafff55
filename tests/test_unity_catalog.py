"""Unity Catalog conventions, locally: catalog table names as every job's input, output and rejects
(the session catalog with Delta), three-level model names, and the registry's naming rule."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from chispa import assert_df_equality

from diabetes_spark import delta_writes, jobs, registry, storage
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import IngestParams, ScoreParams, TrainParams

SCHEMA = "spark_catalog.uc_style"
MODEL = f"{SCHEMA}.diabetes_progression"
EXPERIMENT = "uc-style"


@pytest.mark.slow
def test_catalog_tables_and_a_three_level_model_name_through_every_job(spark, mlflow_home: Path) -> None:
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    raw, scoring_input, output = f"{SCHEMA}.diabetes_raw", f"{SCHEMA}.scoring_batch", f"{SCHEMA}.predictions"
    ingested = jobs.run_ingest(spark, IngestParams(source="sample:diabetes.csv", table=raw, mode="overwrite"))
    assert (ingested["rows_written"], ingested["rejects_table"]) == (437, f"{raw}_rejects")
    assert spark.table(f"{raw}_rejects").count() == 5

    params = TrainParams(training_data=raw, experiment=EXPERIMENT, model_name=MODEL)
    trained = jobs.run_training(spark, params, home=mlflow_home)
    assert (trained["rows_in"], trained["promoted"]) == (437, True)
    assert registry.alias_version(MODEL, registry.CHAMPION) == trained["model_version"]

    batch = storage.read_table(spark, storage.resolve("sample:scoring_batch.csv")).drop("_corrupt_record")
    delta_writes.write_delta(batch, storage.resolve(scoring_input), mode="overwrite")
    score = ScoreParams(input=scoring_input, output=output, model_name=MODEL, experiment=EXPERIMENT, batch_id="b-1")
    for _ in range(2):  # a rerun of the batch replaces it in the catalog table
        scored = jobs.run_batch_scoring(spark, score, home=mlflow_home)
    assert (scored["rows_scored"], scored["rows_rejected"], scored["rejects_table"]) == (38, 2, f"{output}_rejects")
    got = spark.table(output).groupBy("model_name", "model_version", "batch_id").count()
    want = spark.createDataFrame(
        [(MODEL, trained["model_version"], "b-1", 38)],
        "model_name string, model_version string, batch_id string, count long",
    )
    assert_df_equality(got, want, ignore_nullable=True)
    assert spark.table(f"{output}_rejects").count() == 2


def test_a_one_level_model_name_under_unity_catalog_fails_before_any_run(
    spark, mlflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "databricks-uc")
    params = TrainParams(
        training_data="sample:diabetes.csv", experiment="uc-name-check", model_name="diabetes_progression"
    )
    with pytest.raises(
        ConfigurationError, match=r"needs catalog\.schema\.model, e\.g\. main\.diabetes\.diabetes_progression"
    ):
        jobs.run_training(spark, params, home=mlflow_home)
    score = ScoreParams(input="sample:scoring_batch.csv", output="x", model_name="a.b", experiment="uc-name-check")
    with pytest.raises(ConfigurationError, match=r"model_name 'a\.b' is not a Unity Catalog model name"):
        jobs.run_batch_scoring(spark, score, home=mlflow_home)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    assert mlflow.get_experiment_by_name("uc-name-check") is None  # nothing was read, trained or logged
