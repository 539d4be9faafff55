"""Scoring runs that fail: part-way through the write, and after the predictions commit (job retries)."""

from __future__ import annotations

import glob
from pathlib import Path

import mlflow
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark import delta_writes, jobs, scoring, storage
from diabetes_spark.params import ScoreParams

MODEL = TRAINED_MODEL
EXPERIMENT = "failures-tests"
INPUT = "sample:scoring_batch.csv"
#: Columns that differ between any two runs by design: when and by which MLflow run.
RUN_COLUMNS = ("scored_at", "mlflow_run_id")


def _score(spark, mlflow_home: Path, output: Path, batch_id: str) -> dict:
    params = ScoreParams(input=INPUT, output=str(output), model_name=MODEL, experiment=EXPERIMENT, batch_id=batch_id)
    return jobs.run_batch_scoring(spark, params, home=mlflow_home)


def _read(spark, location: Path):
    return storage.read_table(spark, storage.resolve(str(location)))


def _snapshot(spark, df):
    """``df`` as it is now: a Delta read is lazy and would otherwise see later writes."""
    return spark.createDataFrame(df.collect(), df.schema)


def _version(spark, location: Path) -> int | None:
    return storage.delta_version(spark, storage.resolve(str(location)))


def _data_files(table: Path) -> list[str]:
    """The Parquet files under ``table``, in its partition folders too."""
    return glob.glob(f"{table}/**/*.parquet", recursive=True)


def _fail_in_partition(df, *, partition: int, folder: Path, files: int):
    """``df`` in three partitions whose task ``partition`` raises once ``files`` data files exist in
    ``folder`` (or its partition folders): the other tasks have written their files by then, so the
    write fails part-way."""

    def check(value, part):  # no hints: PySpark would read them as a pandas UDF signature
        import glob
        import time

        if part != partition:
            return value
        deadline = time.monotonic() + 120
        while len(glob.glob(f"{folder}/**/*.parquet", recursive=True)) < files and time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError(f"injected task failure in partition {part}")

    udf = F.udf(check, "string")
    return df.repartition(3).withColumn("batch_id", udf("batch_id", F.spark_partition_id()))


@pytest.mark.slow
def test_a_write_that_fails_part_way_leaves_the_table_as_it_was(
    spark, mlflow_home: Path, trained, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "preds"
    _score(spark, mlflow_home, out, "day-1")
    version, files = _version(spark, out), len(_data_files(out))
    before = _snapshot(spark, _read(spark, out))
    rejects_version = _version(spark, Path(f"{out}_rejects"))

    # A job retry of the same batch, whose write task of partition 1 fails after 0 and 2 wrote their files.
    lineage = scoring.with_lineage
    monkeypatch.setattr(
        scoring,
        "with_lineage",
        lambda scored, meta: _fail_in_partition(lineage(scored, meta), partition=1, folder=out, files=files + 2),
    )
    with pytest.raises(Exception, match="injected task failure in partition 1"):
        _score(spark, mlflow_home, out, "day-1")
    monkeypatch.undo()

    assert len(_data_files(out)) >= files + 2, "the failure did not come part-way through the write"
    assert (_version(spark, out), _version(spark, Path(f"{out}_rejects"))) == (version, rejects_version)
    assert_df_equality(_read(spark, out), before, ignore_row_order=True)

    again = _score(spark, mlflow_home, out, "day-1")
    after = _read(spark, out)
    assert again["rows_scored"] == 38
    assert after.select("patient_id").distinct().count() == after.count() == 38
    assert_df_equality(after.drop(*RUN_COLUMNS), before.drop(*RUN_COLUMNS), ignore_row_order=True)


@pytest.mark.slow
def test_a_run_failing_after_its_commit_reruns_to_the_same_rows(
    spark, mlflow_home: Path, trained, tmp_path: Path, monkeypatch
) -> None:
    reference, out = tmp_path / "single", tmp_path / "retried"
    _score(spark, mlflow_home, reference, "b-1")
    rejects = Path(f"{out}_rejects")

    # Attempt 1 fails after the predictions commit, before the rejects are written.
    write_delta = delta_writes.write_delta

    def rejects_fail(df, ref, **kw):
        if ref.location == str(rejects):
            raise RuntimeError("injected failure after the predictions commit")
        return write_delta(df, ref, **kw)

    monkeypatch.setattr(delta_writes, "write_delta", rejects_fail)
    with pytest.raises(RuntimeError, match="after the predictions commit"):
        _score(spark, mlflow_home, out, "b-1")
    monkeypatch.undo()
    assert _read(spark, out).count() == 38 and _version(spark, rejects) is None

    # Attempt 2 (the job's retry) fails after both commits, when logging its metrics.
    def metrics_fail(*args, **kw):
        raise RuntimeError("injected failure after both commits")

    monkeypatch.setattr(mlflow, "log_metrics", metrics_fail)
    with pytest.raises(RuntimeError, match="after both commits"):
        _score(spark, mlflow_home, out, "b-1")
    monkeypatch.undo()

    # Attempt 3 succeeds: the rows are those of a single clean run.
    _score(spark, mlflow_home, out, "b-1")
    assert_df_equality(
        _read(spark, out).drop(*RUN_COLUMNS), _read(spark, reference).drop(*RUN_COLUMNS), ignore_row_order=True
    )
    assert_df_equality(
        _read(spark, rejects).drop("rejected_at"),
        _read(spark, Path(f"{reference}_rejects")).drop("rejected_at"),
        ignore_row_order=True,
    )
