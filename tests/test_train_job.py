"""run_training end to end on a real MLflow store and registry, and its failure paths."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from chispa import assert_df_equality
from mlflow.tracking import MlflowClient

from diabetes_spark import cli, jobs, registry, schemas, spark_models, storage
from diabetes_spark.errors import ConfigurationError, InputError, RejectThresholdError, SchemaError
from diabetes_spark.params import TrainParams
from diabetes_spark.registry import MlflowLocation

HEADER = "AGE,SEX,BMI,BP,S1,S2,S3,S4,S5,S6,Y"


def _runs(experiment: str) -> list:
    exp = mlflow.get_experiment_by_name(experiment)
    return [] if exp is None else MlflowClient().search_runs([exp.experiment_id])


def test_train_registers_logs_and_promotes_only_when_better(
    spark, mlflow_home: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    name, experiment = "gate_model", "train-job"
    bad = TrainParams(training_data="sample:diabetes.csv", experiment=experiment, model_name=name, reg_param=1e4)
    first = jobs.run_training(spark, bad, home=mlflow_home)
    assert (first["model_version"], first["promoted"], first["champion_version"]) == ("1", True, "1")

    code = cli.main(
        ["train", "--training-data", "sample:diabetes.csv", "--experiment", experiment, "--model-name", name, "--json"]
    )
    assert code == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(second) >= {"run_id", "model_name", "model_version", "metrics", "promoted"}
    assert (second["model_version"], second["promoted"]) == ("2", True)
    assert second["metrics"]["rmse"] < first["metrics"]["rmse"]

    third = jobs.run_training(spark, bad, home=mlflow_home)
    assert (third["model_version"], third["promoted"], third["champion_version"]) == ("3", False, "2")
    assert registry.alias_version(name, registry.CHAMPION) == "2"
    assert registry.alias_version(name, registry.CHALLENGER) == "3"

    run = MlflowClient().get_run(third["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["champion_decision"] == "kept"
    # MLflow 3's UI opens the experiment in its model-training view, not the GenAI one.
    assert mlflow.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.metrics["champion_rmse"] == pytest.approx(second["metrics"]["rmse"])
    assert run.data.params["reg_param"] == "10000.0" and run.data.metrics["rows_in"] == 442
    assert run.data.metrics["promoted"] == 0  # kept: the gate's decision as a number, on every MLflow
    artifacts = {a.path for a in MlflowClient().list_artifacts(third["run_id"], "reports")}
    assert artifacts == {
        f"reports/{f}"
        for f in (
            "coefficients.csv",
            "data_quality.json",
            "feature_profile.json",
            "feature_statistics.html",
            "predicted_vs_actual.png",
            "residuals.png",
        )
    }
    quality = mlflow.artifacts.load_dict(f"runs:/{third['run_id']}/reports/data_quality.json")
    assert quality["rows_rejected"] == 5 and quality["rejected_by_reason"]["Y: missing (required)"] == 1
    assert quality["missing_pct"]["BMI"] == pytest.approx(100 / 437, abs=1e-3)

    # Registry round trip: by version and by alias, the same predictions as the logged model.
    by_version = spark_models.load_model(spark, registry.resolve_version(name, version="2"))
    by_alias = spark_models.load_model(spark, registry.resolve_version(name, alias="champion"))
    batch = storage.read_table(spark, storage.resolve("sample:scoring_batch.csv"))
    valid, _ = schemas.split_valid(batch, schemas.load_schema("scoring_input"), source="s", batch_id="b")
    assert_df_equality(by_version.transform(valid), by_alias.transform(valid))
    assert MlflowClient().get_model_version(name, "2").run_id == second["run_id"]

    # The signature is the scoring schema's features in, one double out.
    signature = mlflow.models.get_model_info(f"models:/{name}/2").signature
    assert signature.inputs.input_names() == schemas.feature_names()
    assert [c.type.name for c in signature.outputs.inputs] == ["double"]


def _fails_without_open_run(spark, mlflow_home: Path, data: str, error: type, message: str, **kw) -> None:
    experiment = f"fail-{error.__name__}-{abs(hash(message))}"
    params = TrainParams(training_data=data, experiment=experiment, model_name="never_registered", **kw)
    with pytest.raises(error, match=message):
        jobs.run_training(spark, params, home=mlflow_home)
    assert mlflow.active_run() is None
    assert [r.info.status for r in _runs(experiment)] == ["FAILED"]
    assert registry.alias_version("never_registered", registry.CHAMPION) is None


def test_empty_table_fails_cleanly(spark, mlflow_home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text(HEADER + "\n")
    _fails_without_open_run(spark, mlflow_home, str(tmp_path / "empty.csv"), InputError, "has no data rows")


def test_missing_column_fails_cleanly(spark, mlflow_home: Path, tmp_path: Path) -> None:
    (tmp_path / "cols.csv").write_text("AGE,SEX,Y\n1,M,2\n")
    _fails_without_open_run(spark, mlflow_home, str(tmp_path / "cols.csv"), SchemaError, r"missing required column")


def test_all_labels_null_fails_cleanly(spark, mlflow_home: Path, tmp_path: Path) -> None:
    rows = "\n".join("59,F,32.1,101,157,93.2,38,4,4.8598,87," for _ in range(40))
    (tmp_path / "nolabel.csv").write_text(f"{HEADER}\n{rows}\n")
    _fails_without_open_run(
        spark,
        mlflow_home,
        str(tmp_path / "nolabel.csv"),
        RejectThresholdError,
        r"40 of 40 rows .* 'Y: missing \(required\)' x40",
    )


def test_unknown_estimator_is_refused_before_any_run(mlflow_home: Path, capsys) -> None:
    before = len(_runs("unknown-estimator"))
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--training-data", "x", "--experiment", "unknown-estimator", "--estimator", "svm"])
    assert info.value.code == 2
    assert "invalid choice: 'svm'" in capsys.readouterr().err
    assert len(_runs("unknown-estimator")) == before and mlflow.active_run() is None


def test_on_databricks_the_registry_defaults_to_unity_catalog(mlflow_home: Path, tmp_path: Path, monkeypatch) -> None:
    """MLflow 2 (DBR 15.4, 16.4) with no registry named falls back to the workspace registry; on Databricks
    the jobs name Unity Catalog's, so the three-level name check applies. No remote call is made."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    location = MlflowLocation.from_environment(tmp_path)
    assert location == MlflowLocation(tracking_uri="databricks", registry_uri="databricks-uc")
    with location.active():
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == ("databricks", "databricks-uc")
        with pytest.raises(ConfigurationError, match="'diabetes_progression' is not a Unity Catalog model name"):
            registry.check_model_name("diabetes_progression")
        registry.check_model_name("main.diabetes.diabetes_progression")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks://prod")  # a CLI profile: the same profile's catalog
    assert MlflowLocation.from_environment(tmp_path).registry_uri == "databricks-uc://prod"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "databricks")  # a registry named is kept
    assert MlflowLocation.from_environment(tmp_path).registry_uri == "databricks"
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # a tracking server of one's own
    assert MlflowLocation.from_environment(tmp_path).registry_uri is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")  # off Databricks (Databricks Connect): MLflow decides
    assert MlflowLocation.from_environment(tmp_path).registry_uri is None
