"""Shadow scoring: the challenger beside the champion on the same batch, into ``<output>_shadow``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark import cli, jobs, registry, schemas, scoring, shadow, spark_models, storage
from diabetes_spark.params import TrainParams

NAME, EXPERIMENT, INPUT = "shadow_model", "shadow-tests", "sample:scoring_batch.csv"
#: Columns that differ between two runs over the same batch by design.
PER_RUN = ("scored_at", "mlflow_run_id", "rejected_at")


@pytest.fixture(scope="module")
def versions(spark, mlflow_home: Path) -> tuple[str, str]:
    """v1 the champion; v2, more regularised, loses the gate and stays the challenger."""
    common = {"training_data": "sample:diabetes.csv", "experiment": EXPERIMENT, "model_name": NAME}
    first = jobs.run_training(spark, TrainParams(**common), home=mlflow_home)
    second = jobs.run_training(spark, TrainParams(**common, reg_param=1.0), home=mlflow_home)
    assert (first["promoted"], second["promoted"]) == (True, False)
    return first["model_version"], second["model_version"]


def _score(capsys, output: Path, *flags: str, model: str = NAME) -> dict:
    argv = ["score", "--input", INPUT, "--output", str(output), "--model-name", model, "--batch-id", "b1"]
    assert cli.main([*argv, "--experiment", EXPERIMENT, *flags, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _stable(df):
    """``df`` without the columns each run sets anew, in a fixed order."""
    kept = [c for c in df.columns if c not in PER_RUN]
    return df.select(*kept).orderBy(*[F.col(c).asc_nulls_first() for c in kept])


def _plain(df):
    """``df`` with the same column metadata everywhere (no ML attributes), for value comparisons."""
    return df.select(*[F.col(c).alias(c, metadata={"compared": True}) for c in df.columns])


def _snapshot(spark, df):
    """``df`` as it is now: a Delta read is lazy and would otherwise see later writes."""
    return spark.createDataFrame(df.collect(), df.schema)


def test_shadow_writes_the_champion_unchanged_and_the_challenger_beside_it(
    spark, versions, mlflow_home: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    champion, challenger = versions
    plain_out, shadow_out = tmp_path / "plain", tmp_path / "with_shadow"
    plain = _score(capsys, plain_out)
    summary = _score(capsys, shadow_out, "--shadow")
    assert "shadow" not in plain and summary["model_version"] == champion

    read = lambda path: storage.read_table(spark, storage.resolve(str(path)))  # noqa: E731
    assert_df_equality(_stable(read(plain_out)), _stable(read(shadow_out)))
    assert_df_equality(_stable(read(f"{plain_out}_rejects")), _stable(read(f"{shadow_out}_rejects")))

    # The shadow table: the challenger's own transform of the valid rows, keyed by the input's own
    # column (patient_id), with lineage naming it and the champion's prediction of the same row.
    table = read(f"{shadow_out}_shadow")
    assert table.columns == ["patient_id", schemas.PREDICTION, shadow.CHAMPION_PREDICTION, *scoring.LINEAGE_COLUMNS]
    assert {tuple(r) for r in table.select("model_version", "batch_id").distinct().collect()} == {(challenger, "b1")}
    raw = storage.read_table(spark, storage.resolve(INPUT))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("scoring_input"), source="s", batch_id="b")
    model = spark_models.load_model(spark, registry.resolve_version(NAME, version=challenger))
    expected = model.transform(valid).select("patient_id", schemas.PREDICTION)
    assert_approx_df_equality(
        _plain(table.select("patient_id", schemas.PREDICTION).orderBy("patient_id")),
        _plain(expected.orderBy("patient_id")),
        precision=1e-9,
        ignore_nullable=True,
    )
    champion_rows = read(shadow_out).select("patient_id", F.col(schemas.PREDICTION).alias(shadow.CHAMPION_PREDICTION))
    assert_df_equality(
        table.select("patient_id", shadow.CHAMPION_PREDICTION).orderBy("patient_id"),
        champion_rows.orderBy("patient_id"),
        ignore_metadata=True,
    )

    # The comparison, in the summary and on the scoring run, computed here from the two predictions.
    compared = summary["shadow"]
    pairs = np.array(table.select(schemas.PREDICTION, shadow.CHAMPION_PREDICTION).collect(), dtype=float)
    diff = np.abs(pairs[:, 0] - pairs[:, 1])
    assert compared["shadow_version"] == challenger and compared["rows_written"] == summary["rows_scored"]
    assert compared["shadow_mean_abs_diff"] == pytest.approx(diff.mean(), rel=1e-9)
    assert compared["shadow_max_abs_diff"] == pytest.approx(diff.max(), rel=1e-9)
    assert compared["shadow_corr"] == pytest.approx(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1], rel=1e-9)
    assert compared["shadow_frac_differing"] == pytest.approx((diff > 1.0).mean())
    assert 0 < compared["shadow_frac_differing"] < 1 and compared["shadow_psi"] > 0
    run = MlflowClient().get_run(summary["run_id"])
    assert run.data.tags["shadow_version"] == challenger
    for key in ("shadow_mean_abs_diff", "shadow_max_abs_diff", "shadow_corr", "shadow_psi", "shadow_frac_differing"):
        assert run.data.metrics[key] == pytest.approx(compared[key]), key

    # A rerun of the batch replaces both tables' rows: nothing is duplicated.
    before = _snapshot(spark, _stable(table))
    again = _score(capsys, shadow_out, "--shadow", "--shadow-tolerance", "1000")
    assert again["shadow"]["shadow_frac_differing"] == 0.0
    assert_df_equality(_stable(read(f"{shadow_out}_shadow")), before)
    assert_df_equality(_stable(read(shadow_out)), _stable(read(plain_out)))


def test_shadow_without_another_challenger_does_nothing_and_says_so(
    spark, trained, mlflow_home: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    # The shared model's only version is both champion and challenger.
    assert registry.alias_version(TRAINED_MODEL, registry.CHALLENGER) == trained["model_version"]
    summary = _score(capsys, tmp_path / "out", "--shadow", model=TRAINED_MODEL)
    assert summary["shadow"] == f"shadow scoring not run: model {TRAINED_MODEL} has no challenger other than v1"
    assert not storage.table_exists(spark, storage.resolve(str(tmp_path / "out_shadow")))


def test_a_shadow_table_of_another_schema_fails_before_anything_is_written(
    spark, versions, mlflow_home: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    other = tmp_path / "other"
    spark.range(3).write.format("delta").save(str(other))
    argv = ["score", "--input", INPUT, "--output", str(tmp_path / "out"), "--model-name", NAME, "--shadow"]
    assert cli.main([*argv, "--shadow-output", str(other), "--experiment", EXPERIMENT]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"output table {other}" in err and "diabetes-spark score: error:" in err
    for table in ("out", "out_rejects"):
        assert not storage.table_exists(spark, storage.resolve(str(tmp_path / table)))
    assert spark.read.format("delta").load(str(other)).count() == 3


def test_shadow_columns_stay_out_of_the_champions_rejects(spark) -> None:
    """A shadow prediction is not an input: a rejected row's record holds the input values only."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("x", DoubleType()),
            StructField(schemas.REASON, StringType()),
            StructField(schemas.RECORD, StringType()),
            StructField(shadow.SHADOW, DoubleType()),
            StructField(schemas.PREDICTION, DoubleType()),
        ]
    )
    df = spark.createDataFrame([(1.0, None, None, 2.0, float("inf"))], schema)
    row = scoring.reject_non_finite(df, added=(shadow.SHADOW,)).first()
    assert row[schemas.RECORD] == '{"x":1.0}' and "not a finite number" in row[schemas.REASON]


def test_an_input_column_named_like_the_shadow_tables_own_is_refused() -> None:
    from diabetes_spark.errors import SchemaError

    shadow.check_input_columns(["AGE", "prediction_x"])
    with pytest.raises(SchemaError, match=r"\['Champion_Prediction'\] have the name of a column shadow scoring adds"):
        shadow.check_input_columns(["AGE", "Champion_Prediction"])


def test_the_comparison_taken_in_the_monitors_pass_equals_one_computed_from_all_rows(spark) -> None:
    """The fused comparison (:func:`shadow.aggregates` and :func:`shadow.codes` in :func:`drift.monitor`'s
    one pass) against the same figures computed from every row: exact for the differences and the
    correlation, and for the stability index within what its histograms' buckets allow."""
    from diabetes_spark import drift

    rng = np.random.default_rng(5)
    champion = rng.normal(150, 50, 20_000)
    challenger = champion * 0.7 + rng.normal(60, 15, champion.size)
    challenger[:50] = np.nan  # not a number: compared nowhere
    rows = [(float(a), None if np.isnan(b) else float(b), None) for a, b in zip(champion, challenger)]
    frame = spark.createDataFrame(rows, f"{schemas.PREDICTION} double, {shadow.SHADOW} double, {schemas.REASON} string")
    report = drift.monitor(
        frame,
        unseen=F.lit(False),
        profile=None,
        threshold=0.2,
        carried=[shadow.SHADOW],
        extra=shadow.aggregates(tolerance=10.0),
        codes=shadow.codes(),
    )
    got = shadow.comparison(report.extra, report.caller_codes)

    a, b = champion[50:], challenger[50:]
    diff = np.abs(b - a)
    assert report.rows_scored == champion.size and got["shadow_rows_compared"] == a.size
    assert got["shadow_mean_abs_diff"] == pytest.approx(diff.mean(), rel=1e-9)
    assert got["shadow_max_abs_diff"] == pytest.approx(diff.max(), rel=1e-9)
    assert got["shadow_corr"] == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-9)
    assert got["shadow_frac_differing"] == pytest.approx((diff > 10.0).mean(), rel=1e-9)
    # The stability index over the champion's exact deciles, binned row by row.
    edges = np.quantile(a, np.arange(1, shadow.PSI_BINS) / shadow.PSI_BINS)
    expected = np.bincount(np.searchsorted(edges, a, side="right"), minlength=shadow.PSI_BINS) / a.size
    actual = np.bincount(np.searchsorted(edges, b, side="right"), minlength=shadow.PSI_BINS) / a.size
    exact = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert exact > 0.05 and got["shadow_psi"] == pytest.approx(exact, abs=0.0005), (got["shadow_psi"], exact)


def test_a_batch_without_scored_rows_compares_nothing() -> None:
    got = shadow.comparison({}, {})
    assert got["shadow_rows_compared"] == 0.0
    assert all(np.isnan(got[k]) for k in ("shadow_mean_abs_diff", "shadow_corr", "shadow_psi"))


def test_buckets_keep_the_order_of_the_values_across_signs_and_scales(spark) -> None:
    values = [-1e6, -3.5, -3.49, -1e-3, 0.0, 1e-9, 0.5, 0.51, 1.0, 2.0, 2.01, 150.0, 151.0, 1e300]
    df = spark.createDataFrame([(v,) for v in values], "v double")
    keys = [r[0] for r in df.select(shadow.bucket(F.col("v"))).collect()]
    assert keys == sorted(keys) and len(set(keys)) == len(values)  # each apart by more than a bucket
    same = spark.createDataFrame([(150.0,), (150.001,)], "v double").select(shadow.bucket(F.col("v"))).collect()
    assert same[0][0] == same[1][0]  # 1e-5 apart, relative: one bucket
