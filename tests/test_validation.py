"""Validation of a new version: thresholds with MLflow's semantics, the three modes end to end, and
metrics over every held-out row (where ``mlflow.evaluate`` sees 10,000)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from diabetes_spark import cli, evaluation, jobs, registry, validation
from diabetes_spark.params import TrainParams
from diabetes_spark.thresholds import THRESHOLD_FORM


def test_a_malformed_threshold_fails_before_any_data_is_read(mlflow_home: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-table"  # read first, this would fail as a missing input instead
    code = cli.main(
        ["train", "--training-data", str(missing), "--experiment", "bad-threshold", "--validation-thresholds", "r2<=1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "r2 takes >=, not '<='" in err and THRESHOLD_FORM in err
    assert "no-such" not in err and mlflow.get_experiment_by_name("bad-threshold") is None


def test_metrics_cover_every_held_out_row_where_mlflow_evaluate_sees_10000(spark) -> None:
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.sql import functions as F

    rows = 1_000_000
    # The error grows with the row id: the first 10,000 rows are not a fair sample of the rest.
    df = spark.range(rows).select(
        (F.col("id") % 97).cast("double").alias("label"),
        ((F.col("id") % 97) + F.col("id") / 1e4 * F.when(F.col("id") % 2 == 0, 1.0).otherwise(-1.0)).alias(
            "prediction"
        ),
    )
    ours = evaluation.regression_metrics(df, label="label", prediction="prediction")
    for metric in evaluation.METRICS:
        spark_value = RegressionEvaluator(labelCol="label", predictionCol="prediction", metricName=metric).evaluate(df)
        assert ours[metric] == pytest.approx(spark_value, rel=1e-9), metric
    first = df.limit(10_000)
    with mlflow.start_run(run_name="evaluate-10000"):
        result = mlflow.models.evaluate(data=df, predictions="prediction", targets="label", model_type="regressor")
    seen = evaluation.regression_metrics(first, label="label", prediction="prediction")
    assert result.metrics["root_mean_squared_error"] == pytest.approx(seen["rmse"], rel=1e-9)
    assert result.metrics["root_mean_squared_error"] < ours["rmse"] / 10  # the gate MLflow would run is blind


def _train(name: str, experiment: str, *flags: str) -> list[str]:
    return ["train", "--training-data", "sample:diabetes.csv", "--experiment", experiment, "--model-name", name, *flags]


def test_each_mode_blocks_records_or_skips(spark, mlflow_home: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    name, experiment, client = "validated_model", "validation-modes", MlflowClient()
    weak = TrainParams(training_data="sample:diabetes.csv", experiment=experiment, model_name=name, reg_param=1e4)
    assert jobs.run_training(spark, weak, home=mlflow_home)["champion_version"] == "1"
    capsys.readouterr()

    # enabled: v2 beats v1 but misses rmse<=1: exit 2, the metric named, champion kept, v2 the challenger.
    assert cli.main(_train(name, experiment, "--validation-thresholds", "rmse<=1,r2>=0.1")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the one error line, after MLflow's log lines
    assert err.startswith("diabetes-spark train: error: ") and "v2 failed validation" in err
    assert "Metric rmse value threshold check failed: candidate model rmse = " in err and "rmse threshold = 1.0" in err
    assert "r2" not in err.split("champion unchanged:")[1]  # r2 passed, so it is not named
    assert registry.alias_version(name, registry.CHAMPION) == "1"
    assert registry.alias_version(name, registry.CHALLENGER) == "2"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["validation_verdict"] == "failed" and v2.tags["validation_mode"] == "enabled"
    assert v2.tags["validation_champion_version"] == "1" and "validation (enabled): failed" in v2.description
    assert float(v2.tags["validation_rmse"]) > 1 and "rmse threshold = 1.0" in v2.tags["validation_failures"]
    run = client.get_run(v2.run_id)
    assert run.info.status == "FAILED" and run.data.tags["validation_verdict"] == "failed"
    assert run.data.tags["champion_decision"] == "kept" and run.data.metrics["promoted"] == 0
    assert run.data.metrics["validation_rmse"] == pytest.approx(float(v2.tags["validation_rmse"]))

    # dry_run: the same miss is recorded, and the gate promotes v3 as it does today (it beats v1).
    assert (
        cli.main(
            _train(name, experiment, "--validation-thresholds", "rmse<=1", "--validation-mode", "dry_run", "--json")
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["model_version"], summary["promoted"], summary["validation"]) == ("3", True, "failed")
    assert registry.alias_version(name, registry.CHAMPION) == "3"
    assert client.get_model_version(name, "3").tags["validation_verdict"] == "failed"

    # enabled with min_improvement: v4 equals v3 (same data, same seed), so it is not 10% better.
    assert cli.main(_train(name, experiment, "--min-improvement", "0.1")) == 2
    err = capsys.readouterr().err
    assert (
        "Metric rmse minimum relative change check failed" in err and "minimum relative change threshold = 0.1" in err
    )
    assert registry.alias_version(name, registry.CHAMPION) == "3"

    # disabled: no thresholds; the gate keeps v3 (v5 does not beat it) and the run succeeds.
    assert (
        cli.main(
            _train(name, experiment, "--validation-thresholds", "rmse<=1", "--validation-mode", "disabled", "--json")
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["model_version"], summary["promoted"], summary["validation"]) == ("5", False, "disabled")
    assert client.get_model_version(name, "5").tags["validation_verdict"] == "disabled"

    # enabled and met: passes, and the gate decides (v6 equals v3: kept).
    assert cli.main(_train(name, experiment, "--validation-thresholds", "rmse<=100,r2>=0.2", "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["promoted"], summary["validation"]) == (False, "passed")
    v6 = client.get_model_version(name, "6")
    assert v6.tags["validation_judged_by"] == (
        f"mlflow {mlflow.__version__}" if validation.mlflow_judges() else "diabetes_spark"
    )
    assert float(v6.tags["validation_champion_rmse"]) == pytest.approx(float(v6.tags["validation_rmse"]))
