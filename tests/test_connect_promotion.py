"""Validation and shadow scoring over Spark Connect, against a real MLflow tracking server: the
same verdicts, aliases and tables as in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from diabetes_spark import registry, schemas, shadow, spark_models, storage
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.scoring import LINEAGE_COLUMNS
from tests.mlflow_server import mlflow_server
from tests.test_connect import PER_RUN, _classic, _over_connect, _summary, connect_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

MODEL, INPUT = "connect_promotion_model", "sample:scoring_batch.csv"


def _stable(spark, path: Path):
    df = storage.read_table(spark, storage.resolve(str(path)))
    kept = [c for c in df.columns if c not in PER_RUN]
    return df.select(*kept).orderBy(*[F.col(c).asc_nulls_first() for c in kept])


def test_validation_and_shadow_over_connect_with_a_remote_mlflow(
    spark,
    connect_url: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = ["train", "--training-data", "sample:diabetes.csv", "--model-name", MODEL, "--json"]
    score = ["score", "--input", INPUT, "--model-name", MODEL, "--batch-id", "c1", "--json"]
    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as tracking:
        env = {"MLFLOW_TRACKING_URI": tracking, "DIABETES_SPARK_HOME": str(tmp_path / "home")}
        assert _summary(_over_connect(connect_url, train, env=env))["champion_version"] == "1"

        # enabled: a miss exits 2 naming the metric; v2 stays the challenger.
        blocked = _over_connect(connect_url, [*train, "--validation-thresholds", "rmse<=1"], env=env)
        assert blocked.returncode == 2, blocked.stderr[-2000:]
        last = blocked.stderr.strip().splitlines()[-1]
        assert "v2 failed validation" in last and "rmse threshold = 1.0" in last
        # dry_run: recorded, not blocking; the weaker v3 loses the gate and is the challenger.
        weak = [*train, "--reg-param", "1.0", "--validation-thresholds", "rmse<=1", "--validation-mode", "dry_run"]
        third = _summary(_over_connect(connect_url, weak, env=env))
        assert (third["model_version"], third["promoted"], third["validation"]) == ("3", False, "failed")

        shadowed = _summary(_over_connect(connect_url, [*score, "--output", str(tmp_path / "p"), "--shadow"], env=env))
        again = _summary(_over_connect(connect_url, [*score, "--output", str(tmp_path / "p"), "--shadow"], env=env))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        plain = _classic([*score[:-1], "--output", str(tmp_path / "plain")])
        with MlflowLocation(tracking_uri=tracking, registry_uri=tracking).active():
            aliases = {a: registry.alias_version(MODEL, a) for a in (registry.CHAMPION, registry.CHALLENGER)}
            tags = MlflowClient().get_model_version(MODEL, "2").tags
            metrics = MlflowClient().get_run(shadowed["run_id"]).data.metrics
            challenger = spark_models.load_model(spark, registry.resolve_version(MODEL, version="3"))

    assert aliases == {registry.CHAMPION: "1", registry.CHALLENGER: "3"}
    assert tags["validation_verdict"] == "failed" and tags["validation_mode"] == "enabled"
    assert shadowed["shadow"]["shadow_version"] == "3" and plain["model_version"] == shadowed["model_version"] == "1"
    assert metrics["shadow_mean_abs_diff"] == pytest.approx(shadowed["shadow"]["shadow_mean_abs_diff"])
    assert again["shadow"]["rows_written"] == shadowed["shadow"]["rows_written"] == shadowed["rows_scored"]

    # The champion's rows over Connect with --shadow equal the classic run's without it.
    assert_df_equality(_stable(spark, tmp_path / "p"), _stable(spark, tmp_path / "plain"))
    # The shadow table, rerun once, holds each valid row once, with the challenger's own transform.
    table = storage.read_table(spark, storage.resolve(str(tmp_path / "p_shadow")))
    raw = storage.read_table(spark, storage.resolve(INPUT))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("scoring_input"), source="s", batch_id="b")
    plain_columns = [F.col(c).alias(c, metadata={"compared": True}) for c in ("patient_id", schemas.PREDICTION)]
    assert_approx_df_equality(
        table.select(*plain_columns).orderBy("patient_id"),
        challenger.transform(valid).select(*plain_columns).orderBy("patient_id"),
        precision=1e-9,
        ignore_nullable=True,
    )
    assert {tuple(r) for r in table.select("model_version", "batch_id").distinct().collect()} == {("3", "c1")}
    assert table.columns == ["patient_id", schemas.PREDICTION, shadow.CHAMPION_PREDICTION, *LINEAGE_COLUMNS]
