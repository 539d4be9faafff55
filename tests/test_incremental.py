"""Incremental scoring (``score --incremental``): what is new in a growing Delta input, scored exactly
once, through appends, runs with nothing new, kills, concurrent runs and updates; over Spark Connect
too (tests/test_connect.py's server)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark import jobs, storage
from diabetes_spark.errors import InputError, ParamError, WriteConflictError
from diabetes_spark.params import ScoreParams
from tests.test_concurrency import _paused
from tests.test_connect import _over_connect, _summary, connect_url  # noqa: F401 (a fixture)

EXPERIMENT = "incremental-tests"
#: Every 20th appended row is rejected (an AGE that is not a number): 5 of each 100.
REJECT_EVERY = 20
INPUT_SCHEMA = "patient_id string, AGE string, SEX string, BMI string, BP string, S1 string, S2 string, S3 string, S4 string, S5 string, S6 string"
#: How long a paused micro-batch waits for the test before failing instead of hanging it.
HOOK_SECONDS = 300


def _rows(spark, start: int, count: int):
    """``count`` input rows with ids ``start`` on; every :data:`REJECT_EVERY`-th has an AGE that is not a number."""
    rows = [
        (
            f"P{i:06d}",
            "old" if i % REJECT_EVERY == 0 else str(20 + i % 50),
            "M" if i % 2 else "F",
            str(20 + i % 15),
            str(80 + i % 30),
            "150",
            "90.5",
            "50",
            "4",
            "4.6",
            "90",
        )
        for i in range(start, start + count)
    ]
    return spark.createDataFrame(rows, INPUT_SCHEMA)


def _append(spark, table: Path, start: int, count: int = 100, **options: str) -> None:
    _rows(spark, start, count).write.format("delta").mode("append").options(**options).save(str(table))


def _params(table: Path, output: Path, **more: str) -> ScoreParams:
    return ScoreParams(
        input=str(table),
        output=str(output),
        model_name=TRAINED_MODEL,
        experiment=EXPERIMENT,
        incremental="true",
        **more,
    )


def _run(spark, mlflow_home: Path, table: Path, output: Path, **more: str) -> dict:
    return jobs.run_batch_scoring(spark, _params(table, output, **more), home=mlflow_home)


def _read(spark, location: Path):
    return storage.read_table(spark, storage.resolve(str(location)))


def _version(spark, location: Path) -> int | None:
    return storage.delta_version(spark, storage.resolve(str(location)))


def _ids(spark, count: int, *, rejected: bool):
    """The ids of the first ``count`` appended rows that are scored (or, ``rejected``, that are not)."""
    keep = [i for i in range(count) if (i % REJECT_EVERY == 0) == rejected]
    return spark.createDataFrame([(f"P{i:06d}",) for i in keep], "patient_id string")


def _assert_each_row_once(spark, output: Path, appended: int) -> None:
    """Every valid appended row is in the output exactly once, every invalid one in the rejects."""
    assert_df_equality(
        _read(spark, output).select("patient_id"),
        _ids(spark, appended, rejected=False),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    rejected = _read(spark, Path(f"{output}_rejects")).select(
        F.get_json_object("record", "$.patient_id").alias("patient_id")
    )
    assert_df_equality(rejected, _ids(spark, appended, rejected=True), ignore_row_order=True, ignore_nullable=True)


def test_five_appends_each_scored_once(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    table, output = tmp_path / "input", tmp_path / "preds"
    summaries = []
    for n in range(5):
        _append(spark, table, n * 100)
        summaries.append(_run(spark, mlflow_home, table, output))
    assert [(s["rows_in"], s["rows_scored"], s["rows_rejected"], s["rows_written"]) for s in summaries] == [
        (100, 95, 5, 95)
    ] * 5
    # Each run is one batch, named after the input version it covers.
    assert [s["batch_id"] for s in summaries] == [f"input-v{n}-v{n}.{n}" for n in range(5)]
    _assert_each_row_once(spark, output, 500)
    by_batch = _read(spark, output).groupBy("batch_id").count().orderBy("batch_id")
    assert [tuple(r) for r in by_batch.collect()] == [(f"input-v{n}-v{n}.{n}", 95) for n in range(5)]
    assert sum(s["rows_written"] + s["rows_rejected"] for s in summaries) == 500


def test_a_run_with_nothing_new_changes_nothing(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    import mlflow

    table, output = tmp_path / "input", tmp_path / "preds"
    _append(spark, table, 0, 40)
    _append(spark, table, 40, 60)
    first = _run(spark, mlflow_home, table, output)
    assert (first["rows_in"], first["batch_id"]) == (100, "input-v0-v1.0")  # the first run: all there is
    versions = (_version(spark, output), _version(spark, Path(f"{output}_rejects")))
    runs = len(mlflow.search_runs(experiment_names=[EXPERIMENT]))
    again = _run(spark, mlflow_home, table, output)
    assert (_version(spark, output), _version(spark, Path(f"{output}_rejects"))) == versions
    assert (again["rows_in"], again["batches"], again["batch_id"]) == (0, [], "")
    assert again["incremental"] == f"nothing new in {table} since the last incremental run into {output}"
    assert len(mlflow.search_runs(experiment_names=[EXPERIMENT])) == runs  # no MLflow run for no batch
    _assert_each_row_once(spark, output, 100)


def test_with_the_change_data_feed_an_updated_row_is_scored_again(
    spark, mlflow_home: Path, trained, tmp_path: Path
) -> None:
    table, output = tmp_path / "input", tmp_path / "preds"
    _append(spark, table, 0, 100, **{"delta.enableChangeDataFeed": "true"})
    first = _run(spark, mlflow_home, table, output)
    assert (first["rows_in"], first["rows_scored"]) == (100, 95)
    before = {r["patient_id"]: r["prediction"] for r in _read(spark, output).collect()}
    spark.sql(f"UPDATE delta.`{table}` SET BMI = '40' WHERE patient_id = 'P000001'")  # version 1
    updated = _run(spark, mlflow_home, table, output)
    assert (updated["rows_in"], updated["rows_scored"], updated["batch_id"]) == (1, 1, "input-v1-v1.1")
    rows = _read(spark, output).where("patient_id = 'P000001'").orderBy("batch_id").collect()
    assert [(r["batch_id"], r["BMI"]) for r in rows] == [("input-v0-v0.0", 21.0), ("input-v1-v1.1", 40.0)]
    assert rows[0]["prediction"] == before["P000001"] != rows[1]["prediction"]
    # A delete has nothing to score: no batch, no commit.
    versions = (_version(spark, output), _version(spark, Path(f"{output}_rejects")))
    spark.sql(f"DELETE FROM delta.`{table}` WHERE patient_id = 'P000002'")
    deleted = _run(spark, mlflow_home, table, output)
    assert (deleted["rows_in"], deleted["batches"]) == (0, [])
    assert (_version(spark, output), _version(spark, Path(f"{output}_rejects"))) == versions
    assert _read(spark, output).count() == 96


def test_without_the_change_data_feed_an_update_fails_clearly(
    spark, mlflow_home: Path, trained, tmp_path: Path
) -> None:
    table, output = tmp_path / "input", tmp_path / "preds"
    _append(spark, table, 0, 100)
    _run(spark, mlflow_home, table, output)
    spark.sql(f"UPDATE delta.`{table}` SET BMI = '40' WHERE patient_id = 'P000001'")
    _append(spark, table, 100, 100)
    version = _version(spark, output)
    with pytest.raises(InputError) as info:
        _run(spark, mlflow_home, table, output)
    message = str(info.value)
    assert f"input {table} has a commit that updated or deleted rows, and its change data feed is off" in message
    assert "delta.enableChangeDataFeed = true" in message and "skipChangeCommits" in message
    assert _version(spark, output) == version  # neither the update nor the later append was scored or skipped
    _assert_each_row_once(spark, output, 100)


def test_incremental_needs_a_delta_input_and_names_its_own_batches(spark, mlflow_home: Path, tmp_path: Path) -> None:
    with pytest.raises(ParamError, match=r"incremental scoring reads a Delta table; input .* is a csv file"):
        _run(spark, mlflow_home, Path("sample:scoring_batch.csv"), tmp_path / "preds")
    with pytest.raises(ParamError, match="batch_id 'b1' cannot be given with incremental"):
        _params(tmp_path / "input", tmp_path / "preds", batch_id="b1")
    assert not (tmp_path / "preds").exists() and not (tmp_path / "preds_checkpoint").exists()


@pytest.mark.slow
def test_two_runs_at_once_one_fails_clearly_and_none_doubles(
    spark, mlflow_home: Path, trained, tmp_path: Path, monkeypatch
) -> None:
    from diabetes_spark import scoring

    table, output = tmp_path / "input", tmp_path / "preds"
    _append(spark, table, 0)
    _run(spark, mlflow_home, table, output)  # the nightly case: an output that earlier runs wrote
    _append(spark, table, 100)
    begun, release = str(tmp_path / "begun"), str(tmp_path / "release")
    with_lineage = scoring.with_lineage
    monkeypatch.setattr(
        scoring,
        "with_lineage",
        lambda scored, lineage: _paused(with_lineage(scored, lineage), touch=begun, wait_for=release),
    )
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(_run(spark, mlflow_home, table, output)))
    thread.start()
    try:
        deadline = time.monotonic() + HOOK_SECONDS
        while not os.path.exists(begun) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.exists(begun), "the first run never reached its write"
        with pytest.raises(WriteConflictError) as info:
            _run(spark, mlflow_home, table, output)  # while the first is writing its batch
    finally:
        open(release, "a").close()
        thread.join()
    assert f"another incremental run into {output} is active (checkpoint {output}_checkpoint)" in str(info.value)
    assert (first["rows_in"], first["rows_written"], first["batch_id"]) == (100, 95, "input-v1-v1.1")
    monkeypatch.undo()
    assert _run(spark, mlflow_home, table, output)["rows_in"] == 0
    _assert_each_row_once(spark, output, 200)


CHILD = Path(__file__).resolve().parent / "incremental_child.py"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["predictions", "rejects"])
def test_killed_during_a_write_then_rerun_scores_each_row_once(
    spark, mlflow_home: Path, trained, tmp_path: Path, point: str
) -> None:
    """kill -9 of the whole job (Python, its JVM, its workers) while a micro-batch writes its
    predictions, or after they committed while it writes its rejects; then a rerun."""
    table, output = tmp_path / "input", tmp_path / "preds"
    _append(spark, table, 0)
    _run(spark, mlflow_home, table, output)  # one batch scored before: the kill hits the second
    _append(spark, table, 100)
    begun = tmp_path / "begun"
    command = [sys.executable, str(CHILD), str(table), str(output), str(mlflow_home), point, str(begun)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CHILD.parent.parent), os.environ.get("PYTHONPATH")])),
    }
    with (tmp_path / "child.log").open("wb") as log:
        child = subprocess.Popen(command, env=env, start_new_session=True, stderr=log)
    try:
        deadline = time.monotonic() + HOOK_SECONDS
        while not begun.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert begun.exists(), (tmp_path / "child.log").read_text()[-3000:]
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    predictions_committed = _version(spark, output)
    assert predictions_committed == (1 if point == "rejects" else 0)
    rerun = _run(spark, mlflow_home, table, output)
    assert (rerun["rows_in"], rerun["rows_written"], rerun["batch_id"]) == (100, 95, "input-v1-v1.1")
    _assert_each_row_once(spark, output, 200)
    assert _version(spark, output) == 1, "the replayed batch committed its predictions once"


@pytest.mark.slow
def test_over_spark_connect_five_appends_each_scored_once(
    spark,
    connect_url: str,  # noqa: F811 (the fixture imported above)
    mlflow_home: Path,
    trained,
    tmp_path: Path,
) -> None:
    """The micro-batches run in the Connect server's Python workers, logging to the client's MLflow store."""
    table, output = tmp_path / "input", tmp_path / "preds"
    argv = ["score", "--input", str(table), "--output", str(output), "--model-name", TRAINED_MODEL]
    argv += ["--experiment", EXPERIMENT, "--incremental", "--json"]
    summaries = []
    for n in range(5):
        _append(spark, table, n * 100)
        summaries.append(_summary(_over_connect(connect_url, argv, env={"DIABETES_SPARK_HOME": str(mlflow_home)})))
    assert [(s["rows_in"], s["rows_written"], s["rows_rejected"], s["batch_id"]) for s in summaries] == [
        (100, 95, 5, f"input-v{n}-v{n}.{n}") for n in range(5)
    ]
    _assert_each_row_once(spark, output, 500)
    nothing = _over_connect(connect_url, argv, env={"DIABETES_SPARK_HOME": str(mlflow_home)})
    assert _summary(nothing)["incremental"] == f"nothing new in {table} since the last incremental run into {output}"
    assert _version(spark, output) == 4


@pytest.mark.slow
def test_shadow_scores_each_new_batch_with_the_challenger_too(spark, mlflow_home: Path, tmp_path: Path) -> None:
    from diabetes_spark.params import TrainParams

    name = "incremental_shadow_model"
    common = {"training_data": "sample:diabetes.csv", "experiment": EXPERIMENT, "model_name": name}
    jobs.run_training(spark, TrainParams(**common), home=mlflow_home)
    challenger = jobs.run_training(spark, TrainParams(**common, reg_param=1.0), home=mlflow_home)
    assert challenger["promoted"] is False  # v2 stays the challenger
    table, output = tmp_path / "input", tmp_path / "preds"
    params = dataclasses.replace(_params(table, output, shadow="true"), model_name=name)
    summaries = []
    for n in range(2):
        _append(spark, table, n * 100)
        summaries.append(jobs.run_batch_scoring(spark, params, home=mlflow_home))
    _assert_each_row_once(spark, output, 200)
    shadow_rows = _read(spark, Path(f"{output}_shadow"))
    assert_df_equality(
        shadow_rows.select("patient_id", "batch_id", "champion_prediction"),
        _read(spark, output).select("patient_id", "batch_id", F.col("prediction").alias("champion_prediction")),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert shadow_rows.where("prediction != champion_prediction").count() == 190  # the challenger's own
    assert {r["model_version"] for r in shadow_rows.select("model_version").distinct().collect()} == {"2"}
    assert [s["batch_id"] for s in summaries] == ["input-v0-v0.0", "input-v1-v1.1"]


def test_the_checkpoint_lives_beside_the_output_or_in_a_named_volume(spark, monkeypatch) -> None:
    from diabetes_spark.jobs import stream

    path, table = storage.resolve("/data/preds"), storage.resolve("main.diabetes.preds")
    assert stream.location(spark, "", path) == "/data/preds_checkpoint"
    assert stream.location(spark, " /Volumes/main/diabetes/files/cp ", table) == "/Volumes/main/diabetes/files/cp"
    warehouse = spark.conf.get("spark.sql.warehouse.dir").rstrip("/")
    assert stream.location(spark, "", table) == f"{warehouse}/main_diabetes_preds_checkpoint"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "18.0")
    with pytest.raises(ParamError, match="needs checkpoint_location: a folder in a Unity Catalog volume"):
        stream.location(spark, "", table)


@pytest.mark.parametrize(
    ("start", "end", "versions"),
    [
        pytest.param(None, {"reservoirVersion": 4, "index": 7, "isStartingVersion": True}, (0, 4), id="first-snapshot"),
        pytest.param(
            None, {"reservoirVersion": 5, "index": -1, "isStartingVersion": False}, (0, 4), id="whole-snapshot"
        ),
        pytest.param(
            {"reservoirVersion": 5, "index": -1, "isStartingVersion": False},
            {"reservoirVersion": 8, "index": -1, "isStartingVersion": False},
            (5, 7),
            id="whole-versions",
        ),
        pytest.param(
            {"reservoirVersion": 5, "index": 3, "isStartingVersion": False},
            {"reservoirVersion": 5, "index": 9, "isStartingVersion": False},
            (5, 5),
            id="part-of-one-version",
        ),
        pytest.param(
            {"reservoirVersion": 5, "index": 2**63 - 100, "isStartingVersion": False},
            {"reservoirVersion": 6, "index": 4, "isStartingVersion": False},
            (6, 6),
            id="after-the-end-of-a-version",
        ),
    ],
)
def test_a_micro_batch_covers_the_versions_between_its_offsets(start, end, versions) -> None:
    from diabetes_spark.jobs import stream

    assert stream.covered_versions(start, end) == versions
