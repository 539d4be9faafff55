"""Batch scoring: predictions, lineage, idempotent writes, rejects, monitoring, errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import pyarrow.parquet
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark import cli, delta_writes, drift, jobs, registry, schemas, scoring, spark_models, storage
from diabetes_spark.data import sample_path
from diabetes_spark.errors import ModelTooLargeError, RegistryError, RejectThresholdError, SchemaError
from diabetes_spark.params import ScoreParams, TrainParams

MODEL = TRAINED_MODEL
INPUT = schemas.load_schema("scoring_input")


@pytest.fixture(scope="module")
def model(spark, trained):
    return spark_models.load_model(spark, registry.resolve_version(MODEL, alias="champion"))


def _score(spark, mlflow_home: Path, **kw) -> dict:
    params = ScoreParams(model_name=MODEL, experiment="scoring-tests", **kw)
    return jobs.run_batch_scoring(spark, params, home=mlflow_home)


def _plain(df):
    """``df`` with the same column metadata everywhere (none of its comments, ML attributes), for value
    comparisons. Not ``metadata={}``: Spark 3.5's ``alias`` takes an empty dict as no metadata given, and
    the column keeps its own."""
    return df.select(*[F.col(c).alias(c, metadata={"compared": True}) for c in df.columns])


def _snapshot(spark, df):
    """``df`` as it is now: a Delta read is lazy and would otherwise see later writes."""
    return spark.createDataFrame(df.collect(), df.schema)


def _sample_valid(spark):
    raw = storage.read_table(spark, storage.resolve("sample:scoring_batch.csv"))
    valid, _ = schemas.split_valid(raw, INPUT, source="s", batch_id="b")
    return valid


def test_compiled_expression_equals_the_pipeline_transform(spark, model) -> None:
    valid = _sample_valid(spark).union(
        _sample_valid(spark).limit(3).withColumn("BMI", F.lit(None).cast("double")).withColumn("SEX", F.lit(None))
    )
    compiled = scoring.compile_linear(model)
    assert compiled is not None
    by_expression = scoring.predict(valid, model, compiled=compiled)
    by_transform = scoring.predict(valid, model)
    assert by_expression.filter("SEX = 'X' OR SEX IS NULL").count() == 4
    assert_approx_df_equality(_plain(by_expression), _plain(by_transform), precision=1e-9, ignore_nullable=True)


def test_tree_models_are_not_compiled(spark) -> None:
    from diabetes_spark import training

    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("training_raw"), required=("Y",), source="s", batch_id="b")
    result = training.fit(valid, TrainParams(training_data="x", estimator="random_forest", num_trees=5, max_depth=3))
    assert scoring.compile_linear(result.model) is None and scoring.linear_spec(result.model) is None


def test_scoring_output_is_input_plus_prediction_and_lineage(
    spark, mlflow_home: Path, model, trained, tmp_path: Path
) -> None:
    rows = [
        ("p1", 59.0, "F", 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0),
        ("p2", 48.0, "M", None, 87.0, 183.0, 103.2, 70.0, 3.0, 3.8918, 69.0),
        ("p3", 30.0, "Z", 22.0, 80.0, 150.0, 90.0, 50.0, 3.0, 4.0, 80.0),
    ]
    inline = spark.createDataFrame(
        rows, "patient string, " + ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in INPUT)
    )
    source = str(tmp_path / "in")
    delta_writes.write_delta(inline, storage.resolve(source))
    summary = _score(spark, mlflow_home, input=source, output=str(tmp_path / "out"), batch_id="b-1")
    assert {
        k: summary[k] for k in ("rows_in", "rows_scored", "rows_rejected", "model_version", "batch_id", "unseen_sex")
    } == {
        "rows_in": 3,
        "rows_scored": 3,
        "rows_rejected": 0,
        "model_version": trained["model_version"],
        "batch_id": "b-1",
        "unseen_sex": 1,
    }
    got = storage.read_table(spark, storage.resolve(str(tmp_path / "out")))
    (scored_at,) = [r[0] for r in got.select("scored_at").distinct().collect()]
    assert abs(scored_at - datetime.utcnow()) < timedelta(minutes=10)

    own = model.transform(inline).select("patient", "prediction")
    expected = (
        inline.join(own, "patient")
        .withColumns(
            {
                "model_name": F.lit(MODEL),
                "model_version": F.lit(trained["model_version"]),
                "batch_id": F.lit("b-1"),
                "scored_at": F.lit(scored_at),
                "mlflow_run_id": F.lit(summary["run_id"]),
            }
        )
        .select(*schemas.load_schema("predictions").fieldNames(), "patient")
    )
    assert_approx_df_equality(
        _plain(got), _plain(expected), precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
    assert got.columns == [*schemas.load_schema("predictions").fieldNames(), "patient"]
    # The table is partitioned by batch and keeps statistics for the lineage and the prediction only;
    # batch_id lives in the partition folder, not the files; scored_at is INT64 microseconds.
    out = tmp_path / "out"
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{out}`").first()
    assert (detail["partitionColumns"], detail["properties"]) == (["batch_id"], scoring.PREDICTIONS_TABLE_PROPERTIES)
    files = list(out.rglob("*.parquet"))
    assert files and all(f.parent == out / "batch_id=b-1" for f in files)
    schemas_written = [pyarrow.parquet.read_schema(f) for f in files]
    assert all(s.field("scored_at").type.unit == "us" and "batch_id" not in s.names for s in schemas_written)
    # The predictions came from the folded spec in the model's metadata, not from a model load.
    assert MlflowClient().get_run(summary["run_id"]).data.tags["scoring_path"] == "column_expression"
    spec = registry.model_metadata(registry.resolve_version(MODEL, version=trained["model_version"]))[
        scoring.LINEAR_SPEC
    ]
    assert spec == scoring.linear_spec(model)


def test_rerun_replaces_its_batch_and_other_batches_stay(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    out = str(tmp_path / "preds")
    first = _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="day-1")
    before = _snapshot(spark, storage.read_table(spark, storage.resolve(out)).drop("scored_at", "mlflow_run_id"))
    rejects_before = _snapshot(spark, storage.read_table(spark, storage.resolve(out + "_rejects")).drop("rejected_at"))
    again = _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="day-1")
    assert (again["rows_scored"], again["rows_rejected"]) == (first["rows_scored"], first["rows_rejected"]) == (38, 2)
    after = storage.read_table(spark, storage.resolve(out)).drop("scored_at", "mlflow_run_id")
    assert_df_equality(after, before, ignore_row_order=True)
    rejects_after = storage.read_table(spark, storage.resolve(out + "_rejects")).drop("rejected_at")
    assert_df_equality(rejects_after, rejects_before, ignore_row_order=True)

    _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="day-2")
    both = storage.read_table(spark, storage.resolve(out))
    counts = {r["batch_id"]: r["count"] for r in both.groupBy("batch_id").count().collect()}
    assert counts == {"day-1": 38, "day-2": 38}
    day1 = both.filter("batch_id = 'day-1'").drop("scored_at", "mlflow_run_id")
    assert_df_equality(day1, before, ignore_row_order=True)


def test_a_rerun_without_rejects_removes_the_batchs_earlier_rejects_and_commits_none_when_there_are_none(
    spark, mlflow_home: Path, trained, tmp_path: Path
) -> None:
    out = str(tmp_path / "preds")
    rejects = storage.resolve(out + "_rejects")
    lines = Path(sample_path("scoring_batch.csv")).read_text().splitlines(keepends=True)
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("".join(line for line in lines if "P0028" not in line and "P0105" not in line))
    _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="other")
    _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="fix-1")
    kept = _snapshot(spark, storage.read_table(spark, rejects).where("batch_id = 'other'"))
    assert storage.may_hold_rows(spark, rejects, "batch_id = 'fix-1'")
    again = _score(spark, mlflow_home, input=str(fixed), output=out, batch_id="fix-1")
    assert (again["rows_scored"], again["rows_rejected"]) == (38, 0)
    assert_df_equality(storage.read_table(spark, rejects), kept, ignore_row_order=True)
    assert not storage.may_hold_rows(spark, rejects, "batch_id = 'fix-1'")
    version = storage.delta_version(spark, rejects)
    _score(spark, mlflow_home, input=str(fixed), output=out, batch_id="fix-1")
    assert storage.delta_version(spark, rejects) == version  # nothing to replace: no commit


def test_rejects_carry_reasons_and_ids(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    out = str(tmp_path / "preds")
    summary = _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=out, batch_id="r-1")
    rejects = storage.read_table(spark, storage.resolve(summary["rejects_table"]))
    got = rejects.select(F.get_json_object("record", "$.patient_id").alias("patient_id"), "reason", "batch_id")
    expected = spark.createDataFrame(
        [("P0028", "BMI: cannot parse '??' as double", "r-1"), ("P0105", "S2: cannot parse 'abc' as double", "r-1")],
        "patient_id string, reason string, batch_id string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert spark.sql(f"DESCRIBE DETAIL delta.`{summary['rejects_table']}`").first()["partitionColumns"] == ["batch_id"]
    ids = {r[0] for r in storage.read_table(spark, storage.resolve(out)).select("patient_id").collect()}
    assert len(ids) == 38 and not ids & {"P0028", "P0105"}


def test_monitoring_is_logged_and_drift_flags_a_shift(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    training_like = str(tmp_path / "like")
    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("training_raw"), required=("Y",), source="s", batch_id="b")
    delta_writes.write_delta(valid.drop("Y"), storage.resolve(training_like))
    shifted = str(tmp_path / "shifted")
    delta_writes.write_delta(valid.drop("Y").withColumn("BMI", F.col("BMI") * 1.5), storage.resolve(shifted))

    like = _score(spark, mlflow_home, input=training_like, output=str(tmp_path / "o1"))
    assert like["batch_id"] == "like-v0"
    assert max(like["drift"].values()) < 0.1 and like["drifted_features"] == []
    moved = _score(spark, mlflow_home, input=shifted, output=str(tmp_path / "o2"))
    assert moved["drift"]["BMI"] > 1.0 and moved["drifted_features"] == ["BMI"]

    run = MlflowClient().get_run(moved["run_id"])
    assert run.data.tags["drifted_features"] == "BMI"
    assert run.data.metrics["rows_scored"] == 437 and run.data.metrics["unseen_sex"] == 0
    written = storage.read_table(spark, storage.resolve(str(tmp_path / "o2")))
    summary = written.agg(*[fn("prediction") for fn in (F.mean, F.stddev, F.min, F.max)]).first()
    logged = [run.data.metrics[f"prediction_{s}"] for s in ("mean", "std", "min", "max")]
    assert logged == pytest.approx(list(summary), rel=1e-9)
    assert run.data.metrics["psi_BMI"] == pytest.approx(moved["drift"]["BMI"])
    # The run's one grouped pass agrees with counting the input's bins on their own.
    profile = mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/reports/feature_profile.json")
    counts = drift.profile_counts(storage.read_table(spark, storage.resolve(shifted)), profile)
    assert moved["drift"] == pytest.approx(drift.psi_from_counts(profile, counts), rel=1e-9)


def test_cli_score_prints_the_contract_and_default_batch_id_is_stable(
    spark, mlflow_home: Path, trained, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    source = tmp_path / "batch.csv"
    source.write_text(sample_path("scoring_batch.csv").read_text())
    args = [
        "score",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "p"),
        "--model-name",
        MODEL,
        "--experiment",
        "scoring-tests",
        "--json",
    ]
    summaries = []
    for _ in range(2):
        assert cli.main(args) == 0
        summaries.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    first, second = summaries
    assert set(first) >= {"rows_in", "rows_scored", "rows_rejected", "model_version", "batch_id", "output"}
    assert first["batch_id"] == second["batch_id"] and first["batch_id"].startswith("batch.csv-")
    assert storage.read_table(spark, storage.resolve(str(tmp_path / "p"))).count() == 38


def test_missing_column_fails_and_writes_nothing(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("AGE,SEX\n1,M\n")
    with pytest.raises(SchemaError, match=r"missing required column\(s\) \['BMI'"):
        _score(spark, mlflow_home, input=str(tmp_path / "in.csv"), output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_reject_threshold_fails_before_writing_with_counts_and_reasons(
    spark, mlflow_home: Path, trained, tmp_path: Path
) -> None:
    header = "AGE,SEX,BMI,BP,S1,S2,S3,S4,S5,S6"
    good = "59,F,32.1,101,157,93.2,38,4,4.8598,87"
    rows = [good] * 7 + ["old,F,32.1,101,157,93.2,38,4,4.8598,87"] * 3  # 30% rejected, above the 20% default
    (tmp_path / "in.csv").write_text("\n".join([header, *rows]) + "\n")
    message = r"3 of 10 rows \(30.0%\) .* above max_reject_fraction=0.2; nothing was written. Top reasons: \"AGE: cannot parse 'old' as double\" x3"
    with pytest.raises(RejectThresholdError, match=message):
        _score(spark, mlflow_home, input=str(tmp_path / "in.csv"), output=str(tmp_path / "o"), batch_id="too-bad")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o_rejects").exists()
    summary = _score(
        spark, mlflow_home, input=str(tmp_path / "in.csv"), output=str(tmp_path / "o"), max_reject_fraction=0.5
    )
    assert (summary["rows_scored"], summary["rows_rejected"]) == (7, 3)


def test_missing_model_version_or_alias_names_what_exists(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=rf"registered model 'nope' does not exist; registered models: .*'{MODEL}'"):
        registry.resolve_version("nope")
    with pytest.raises(RegistryError, match=rf"version 99 of model '{MODEL}' does not exist; versions: \['1'\]"):
        registry.resolve_version(MODEL, version="99")
    with pytest.raises(RegistryError, match=rf"alias 'gold' of model '{MODEL}' does not exist; .*'champion': '1'"):
        _score(spark, mlflow_home, input="sample:scoring_batch.csv", output=str(tmp_path / "o"), model_alias="gold")
    assert not (tmp_path / "o").exists()


def _model_tests(mlflow_home: Path) -> str:
    """The experiment of the model tests below, its artifacts in the session's store (not ./mlruns)."""
    return registry.ensure_experiment("gbt-volume-tests", artifact_root=mlflow_home / "mlartifacts")


@pytest.fixture(scope="module")
def gbt(spark, mlflow_home: Path):
    """A small gbt pipeline, registered as a model of its own: ``(resolved version, fitted model, rows)``."""
    from diabetes_spark import training

    valid = _sample_valid(spark)
    train = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    train, _ = schemas.split_valid(
        train, schemas.load_schema("training_raw"), required=("Y",), source="s", batch_id="b"
    )
    fitted = training.fit(
        train.select(*schemas.load_schema("training_raw").fieldNames()),
        TrainParams(training_data="x", estimator="gbt", max_depth=3),
    ).model
    with mlflow.start_run(experiment_id=_model_tests(mlflow_home)):
        info = spark_models.log_model(fitted, example=valid.select(*schemas.feature_names()))
    version = registry.register(info.model_uri, "gbt_volume_model")
    return registry.resolve_version("gbt_volume_model", version=version), fitted, valid


def test_a_tree_model_loads_through_a_volume_where_mlflow_would_go_through_dbfs(
    spark, gbt, tmp_path: Path, monkeypatch
) -> None:
    """On a dedicated cluster MLflow 3.0.1 and earlier (DBR 15.4, 16.4, 17.3) turn a ``/Volumes``
    ``dfs_tmpdir`` into ``/dbfs/Volumes/...`` (mlflow #18668). MLflow's Databricks path is forced here;
    a folder named ``/Volumes`` cannot exist, so a temporary folder stands in for the volume mount."""
    import mlflow.spark
    from mlflow.utils import databricks_utils, uri
    from packaging.version import Version

    resolved, fitted, valid = gbt
    volume = "/Volumes/main/diabetes/files/mlflow_tmp"
    broken = Version(mlflow.__version__) < Version("3.8.1")
    assert uri.dbfs_hdfs_uri_to_fuse_path(volume) == ("/dbfs" + volume if broken else volume)

    folder = tmp_path / "volume"
    folder.mkdir()
    monkeypatch.setattr(spark_models, "VOLUMES", f"{tmp_path}/")
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setattr(databricks_utils, "is_in_cluster", lambda: True)
    monkeypatch.setattr(databricks_utils, "is_dbfs_fuse_available", lambda: True)
    fuse_paths = []

    def to_fuse(path: str) -> str:
        fuse_paths.append(uri.dbfs_hdfs_uri_to_fuse_path(path))
        raise RuntimeError("MLflow's DBFS route")

    monkeypatch.setattr(mlflow.spark, "dbfs_hdfs_uri_to_fuse_path", to_fuse)
    with pytest.raises(RuntimeError, match="MLflow's DBFS route"):
        mlflow.spark.load_model(resolved.uri, dfs_tmpdir=str(folder))
    assert len(fuse_paths) == 1 and fuse_paths[0].startswith(f"/dbfs{folder}/")

    loaded = spark_models.load_model(spark, resolved, dfs_tmpdir=str(folder))
    assert len(fuse_paths) == 1  # not through MLflow's loader
    assert [type(s).__name__ for s in loaded.stages][-1] == "GBTRegressionModel"
    expected, got = (m.transform(valid).select("patient_id", "prediction") for m in (fitted, loaded))
    assert_approx_df_equality(got, expected, precision=1e-9, ignore_nullable=True)
    # The copy stays, as mlflow.spark's does: Spark 3.5's ImputerModel reads its data at transform time.
    assert [p.name[:21] for p in folder.iterdir()] == ["diabetes-spark-model-"]


def test_a_scoring_job_removes_the_model_copy_it_staged_in_the_volume_as_it_ends(
    spark, mlflow_home: Path, gbt, tmp_path: Path, monkeypatch
) -> None:
    """The staged copy must outlive ``load_model`` but not the job: a daily job through a volume would
    otherwise leave one copy per run there. The job scores with it first, as the fitted model does."""
    resolved, fitted, valid = gbt
    folder = tmp_path / "volume"
    folder.mkdir()
    monkeypatch.setattr(spark_models, "VOLUMES", f"{tmp_path}/")
    output = str(tmp_path / "predictions")
    result = jobs.run_batch_scoring(
        spark,
        ScoreParams(
            input="sample:scoring_batch.csv",
            output=output,
            model_name=resolved.name,
            model_version=resolved.version,
            experiment="scoring-tests",
            dfs_tmpdir=str(folder),
        ),
        home=mlflow_home,
    )
    assert result["rows_scored"] == valid.count() > 0
    written = storage.read_table(spark, storage.resolve(output)).select("patient_id", "prediction")
    expected = fitted.transform(valid).select("patient_id", "prediction")
    assert_approx_df_equality(
        written.orderBy("patient_id"), expected.orderBy("patient_id"), precision=1e-9, ignore_nullable=True
    )
    assert list(folder.iterdir()) == []


def test_serverless_refuses_a_model_above_its_limit_before_logging(spark, mlflow_home: Path, gbt, monkeypatch) -> None:
    """Serverless compute takes Spark ML models up to 100 MB; a larger one fails before MLflow hears of it
    (the limit is lowered below the real saved gbt model's size), and one within it is logged and loads."""
    _, fitted, valid = gbt
    example = valid.select(*schemas.feature_names())
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "client.4.9")
    monkeypatch.setattr(spark_models, "SERVERLESS_MODEL_LIMIT", 10_000)
    experiment = _model_tests(mlflow_home)
    too_large = r"takes 0\.0[1-9]\d* MB saved, above serverless compute's limit of 0\.01 MB"
    with mlflow.start_run(experiment_id=experiment) as run, pytest.raises(ModelTooLargeError, match=too_large):
        spark_models.log_model(fitted, example=example)
    assert MlflowClient().list_artifacts(run.info.run_id) == []

    monkeypatch.setattr(spark_models, "SERVERLESS_MODEL_LIMIT", 100 * 1000 * 1000)
    with mlflow.start_run(experiment_id=experiment):
        info = spark_models.log_model(fitted, example=example)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    loaded = mlflow.spark.load_model(info.model_uri)
    expected, got = (m.transform(valid).select("patient_id", "prediction") for m in (fitted, loaded))
    assert_approx_df_equality(got, expected, precision=1e-9, ignore_nullable=True)


def test_check_size_measures_the_saved_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0").write_bytes(b"x" * 1500)
    (tmp_path / "metadata").write_bytes(b"y" * 500)
    assert spark_models.check_size(tmp_path, limit=2000) == 2000
    with pytest.raises(ModelTooLargeError, match=r"num_trees.*max_depth"):
        spark_models.check_size(tmp_path, limit=1999)
