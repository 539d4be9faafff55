"""Concurrent writers, scoring runs and training runs on one Spark session and one MLflow store.

A race left to timing may not happen on a given run, so each one here is forced: a write task
of one writer waits (in its Python worker) until the other has begun or committed. Delta takes a
writer's snapshot before its tasks run, so a writer paused until another's commit file exists is
bound to conflict with that commit. Training runs are paused with threading hooks around the
registry calls. Every test checks that the conflict really happened.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from mlflow.exceptions import MlflowException
from pyspark.sql import functions as F

from diabetes_spark import delta_writes, jobs, registry, schemas, scoring, spark_models, storage
from diabetes_spark.errors import WriteConflictError
from diabetes_spark.params import ScoreParams, TrainParams

MODEL = "concurrency_model"
EXPERIMENT = "concurrency-tests"
INPUT = "sample:scoring_batch.csv"
RUN_COLUMNS = ("scored_at", "mlflow_run_id")
#: The longest a hook waits for the other writer before failing the test instead of hanging it.
HOOK_SECONDS = 300
ROWS = "batch_id string, v int"


def _together(**jobs_by_name: Callable[[], Any]) -> dict[str, Any]:
    """Run each job in a thread named after it, all at once; re-raise the first failure."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str, job: Callable[[], Any]) -> None:
        try:
            results[name] = job()
        except BaseException as e:  # handed to the test thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(name, job), name=name) for name, job in jobs_by_name.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _paused(df, *, touch: str | None, wait_for: str, column: str = "batch_id"):
    """``df`` unchanged, in one write task that first creates ``touch`` and then waits for ``wait_for``."""

    def hook(value):  # no hints: PySpark would read them as a pandas UDF signature
        import os
        import time

        if touch:
            open(touch, "a").close()
        deadline = time.monotonic() + HOOK_SECONDS
        while not os.path.exists(wait_for):
            if time.monotonic() > deadline:
                raise TimeoutError(f"interleaving hook: {wait_for} never appeared")
            time.sleep(0.05)
        return value

    # One task per writer: two writers' waiting tasks must never take both local[2] slots.
    return df.coalesce(1).withColumn(column, F.udf(hook, df.schema[column].dataType)(column))


def _interleaved(first, second, table: Path, version: int, tmp_path: Path) -> tuple:
    """``first`` waits until ``second`` has begun writing; ``second`` until ``first`` committed
    ``version`` of ``table``: the second's commit then conflicts with the first's."""
    begun = str(tmp_path / f"second-begun-{version}")
    committed = str(table / "_delta_log" / f"{version:020d}.json")
    return _paused(first, touch=None, wait_for=begun), _paused(second, touch=begun, wait_for=committed)


def _retries(caplog: pytest.LogCaptureFixture, table: Path) -> list[str]:
    """The conflicts ``write_delta`` logged and retried for ``table``."""
    return [
        r.args[1]
        for r in caplog.records
        if r.name == "diabetes_spark.delta_writes"
        and "conflicted with a concurrent commit" in r.msg
        and r.args[0] == str(table)
    ]


def _read(spark, location: Path):
    return storage.read_table(spark, storage.resolve(str(location)))


# ---- write_delta on its own -------------------------------------------------------------------


def test_first_two_appenders_to_an_empty_location_both_land_once(spark, tmp_path: Path, caplog) -> None:
    table = tmp_path / "t"
    ref = storage.resolve(str(table))
    a = spark.createDataFrame([("a", i) for i in range(3)], ROWS)
    b = spark.createDataFrame([("b", i) for i in range(5)], ROWS)
    first, second = _interleaved(a, b, table, 0, tmp_path)
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.delta_writes"):
        counts = _together(
            first=lambda: delta_writes.write_delta(first, ref), second=lambda: delta_writes.write_delta(second, ref)
        )
    assert counts == {"first": 3, "second": 5}
    assert [c.split(":")[0] for c in _retries(caplog, table)] == ["DELTA_PROTOCOL_CHANGED"]
    assert_df_equality(_read(spark, table), a.union(b), ignore_row_order=True, ignore_nullable=True)
    assert storage.delta_version(spark, ref) == 1


@pytest.mark.parametrize(
    ("partition_by", "retried"),
    [
        pytest.param((), ["DELTA_CONCURRENT_APPEND"], id="unpartitioned"),
        # Partitioned by batch: the second commits over the first's commit without a retry.
        pytest.param(("batch_id",), [], id="partitioned-by-batch"),
    ],
)
def test_two_batches_replaced_at_once_both_land(spark, tmp_path: Path, caplog, partition_by, retried) -> None:
    table = tmp_path / "t"
    ref = storage.resolve(str(table))
    z = spark.createDataFrame([("z", 0), ("z", 1)], ROWS)
    delta_writes.write_delta(z, ref, partition_by=partition_by)
    a = spark.createDataFrame([("a", i) for i in range(3)], ROWS)
    b = spark.createDataFrame([("b", i) for i in range(5)], ROWS)
    first, second = _interleaved(a, b, table, 1, tmp_path)

    def replace(df, batch: str) -> Callable[[], int]:
        return lambda: delta_writes.write_delta(df, ref, mode="overwrite", replace_where=f"batch_id = '{batch}'")

    with caplog.at_level(logging.WARNING, logger="diabetes_spark.delta_writes"):
        counts = _together(first=replace(first, "a"), second=replace(second, "b"))
    assert counts == {"first": 3, "second": 5}
    assert [c.split(":")[0] for c in _retries(caplog, table)] == retried
    assert storage.delta_version(spark, ref) == 2
    assert_df_equality(_read(spark, table), z.union(a).union(b), ignore_row_order=True, ignore_nullable=True)


def test_a_write_that_keeps_conflicting_fails_clearly_and_writes_nothing(spark, tmp_path: Path) -> None:
    table = tmp_path / "t"
    ref = storage.resolve(str(table))
    delta_writes.write_delta(spark.createDataFrame([("a", 0)], ROWS), ref)
    a = spark.createDataFrame([("a", 1)], ROWS)
    b = spark.createDataFrame([("a", 2)], ROWS)
    first, second = _interleaved(a, b, table, 1, tmp_path)

    def replace(df) -> Callable[[], int]:
        return lambda: delta_writes.write_delta(df, ref, mode="overwrite", replace_where="batch_id = 'a'", attempts=1)

    with pytest.raises(WriteConflictError) as info:
        _together(first=replace(first), second=replace(second))
    message = str(info.value)
    assert f"writing to {table} conflicted with concurrent writers on every attempt (1; last: " in message
    assert "DELTA_CONCURRENT_APPEND" in message and "nothing of this write was committed. Rerun the job" in message
    assert_df_equality(_read(spark, table), a, ignore_nullable=True)
    assert storage.delta_version(spark, ref) == 1


def test_the_row_count_is_found_past_the_history_window(spark, tmp_path: Path, monkeypatch) -> None:
    table = tmp_path / "t"
    ref = storage.resolve(str(table))
    delta_writes.write_delta(spark.createDataFrame([("z", 0)], ROWS), ref)
    monkeypatch.setattr(delta_writes, "HISTORY_WINDOW", 2)  # 20 in production: fewer commits to make here
    save = delta_writes._save

    def save_then_others_commit(df, target, options, mode, **kwargs) -> None:
        save(df, target, options, mode, **kwargs)
        for i in range(delta_writes.HISTORY_WINDOW):  # other writers' commits land before this write reads its own back
            spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES ('other.writer' = '{i}')")

    monkeypatch.setattr(delta_writes, "_save", save_then_others_commit)
    written = delta_writes.write_delta(spark.createDataFrame([("a", i) for i in range(4)], ROWS), ref)
    assert written == 4 and storage.delta_version(spark, ref) == 1 + delta_writes.HISTORY_WINDOW


# ---- training runs at once ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def race(spark, mlflow_home: Path) -> dict[str, dict]:
    """Two training runs at once, a good and a (heavily regularised) bad one, forced into the worst
    interleaving: both register at once, both read "no champion", and the bad one moves the alias last."""
    good = TrainParams(training_data="sample:diabetes.csv", experiment=EXPERIMENT, model_name=MODEL)
    bad = dataclasses.replace(good, reg_param=1e4)
    together = threading.Barrier(2, timeout=HOOK_SECONDS)
    promoted = {"good": threading.Event(), "bad": threading.Event()}
    register, set_alias = registry.register, registry.set_alias
    promoting: set[str] = set()

    def register_together(model_uri: str, name: str) -> str:
        together.wait()
        return register(model_uri, name)

    def bad_promotes_last(name: str, alias: str, version: str) -> None:
        thread = threading.current_thread().name
        first_promotion = alias == registry.CHAMPION and thread not in promoting
        if first_promotion:
            promoting.add(thread)
            together.wait()  # both runs have read the alias and decided to promote
            if thread == "bad":
                assert promoted["good"].wait(HOOK_SECONDS)
        set_alias(name, alias, version)
        if first_promotion:
            promoted[thread].set()
            if thread == "good":  # the bad run's overwrite lands before the good run reads the alias back
                assert promoted["bad"].wait(HOOK_SECONDS)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "register", register_together)
        patch.setattr(registry, "set_alias", bad_promotes_last)
        return _together(
            good=lambda: jobs.run_training(spark, good, home=mlflow_home),
            bad=lambda: jobs.run_training(spark, bad, home=mlflow_home),
        )


@pytest.mark.slow
def test_two_training_runs_at_once_register_two_versions_and_the_better_is_champion(race) -> None:
    good, bad = race["good"], race["bad"]
    assert {good["model_version"], bad["model_version"]} == {"1", "2"}
    versions = {str(v.version): v.run_id for v in mlflow.MlflowClient().search_model_versions(f"name = '{MODEL}'")}
    assert versions == {good["model_version"]: good["run_id"], bad["model_version"]: bad["run_id"]}
    assert good["metrics"]["rmse"] < bad["metrics"]["rmse"]
    assert registry.alias_version(MODEL, registry.CHAMPION) == good["model_version"]
    run = mlflow.MlflowClient().get_run(good["run_id"])
    # The good run saw the bad one's promotion and compared itself with it.
    assert run.data.metrics["champion_rmse"] == pytest.approx(bad["metrics"]["rmse"])
    assert run.data.tags["champion_decision"] == "promoted"


def test_a_new_alias_set_by_two_runs_at_once_is_set_not_refused(
    mlflow_home: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """MLflow's SQL store sets an alias by a lookup and then an insert or update. Both runs here look
    it up before either writes, so both insert: the later insert breaks the alias' unique key."""
    from sqlalchemy.orm import Session

    name = "concurrent_alias_model"
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    versions = [client.create_model_version(name, str(tmp_path / f"v{i}"), run_id=None).version for i in (1, 2)]
    looked_up = threading.Barrier(2, timeout=HOOK_SECONDS)
    first_lookups: set[str] = set()
    merge = Session.merge

    def merge_then_wait(session, instance, **kwargs):
        merged = merge(session, instance, **kwargs)  # the lookup; the insert or update follows at commit
        thread = threading.current_thread().name
        if thread not in first_lookups:
            first_lookups.add(thread)
            looked_up.wait()
        return merged

    monkeypatch.setattr(Session, "merge", merge_then_wait)
    caplog.set_level(logging.INFO, logger=registry.__name__)
    _together(**{f"v{v}": (lambda v=v: registry.set_alias(name, registry.CHALLENGER, str(v))) for v in versions})
    monkeypatch.undo()

    assert first_lookups == {f"v{v}" for v in versions}
    assert [r.getMessage() for r in caplog.records if "created concurrently" in r.getMessage()] == [
        f"Alias 'challenger' of {name} was created concurrently; setting it again (attempt 2)"
    ]
    assert registry.alias_version(name, registry.CHALLENGER) in {str(v) for v in versions}


def test_an_unreadable_registry_is_not_taken_for_no_champion(mlflow_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    registry_uri = mlflow.get_registry_uri()
    mlflow.set_registry_uri("http://127.0.0.1:9")  # nothing listens on the discard port
    try:
        with pytest.raises(MlflowException):
            registry.alias_version(MODEL, registry.CHAMPION)
    finally:
        mlflow.set_registry_uri(registry_uri)


# ---- scoring runs at once -----------------------------------------------------------------------


def _score(spark, mlflow_home: Path, output: Path, batch_id: str) -> dict:
    params = ScoreParams(input=INPUT, output=str(output), model_name=MODEL, experiment=EXPERIMENT, batch_id=batch_id)
    return jobs.run_batch_scoring(spark, params, home=mlflow_home)


@pytest.fixture(scope="module")
def reference(spark, mlflow_home: Path, race, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Batches ``day-1`` and ``day-2`` scored one after the other: what any interleaving must give."""
    out = tmp_path_factory.mktemp("reference") / "preds"
    for batch in ("day-1", "day-2"):
        _score(spark, mlflow_home, out, batch)
    return out


def _interleave_runs(monkeypatch, table: Path, version: int, tmp_path: Path) -> None:
    """Scoring runs in threads ``first`` and ``second``: the second's predictions commit conflicts with the first's."""
    with_lineage = scoring.with_lineage

    def paused(scored, lineage):
        predictions = with_lineage(scored, lineage)
        first, second = _interleaved(predictions, predictions, table, version, tmp_path)
        return first if threading.current_thread().name == "first" else second

    monkeypatch.setattr(scoring, "with_lineage", paused)


def _assert_same_rows(spark, out: Path, reference: Path) -> None:
    assert_df_equality(
        _read(spark, out).drop(*RUN_COLUMNS), _read(spark, reference).drop(*RUN_COLUMNS), ignore_row_order=True
    )
    assert_df_equality(
        _read(spark, Path(f"{out}_rejects")).drop("rejected_at"),
        _read(spark, Path(f"{reference}_rejects")).drop("rejected_at"),
        ignore_row_order=True,
    )


@pytest.mark.slow
def test_two_batches_scored_at_once_into_an_empty_location_both_land(
    spark, mlflow_home: Path, reference: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    out = tmp_path / "preds"
    _interleave_runs(monkeypatch, out, 0, tmp_path)
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.delta_writes"):
        runs = _together(
            first=lambda: _score(spark, mlflow_home, out, "day-1"),
            second=lambda: _score(spark, mlflow_home, out, "day-2"),
        )
    assert [r["rows_scored"] for r in runs.values()] == [38, 38]
    assert [c.split(":")[0] for c in _retries(caplog, out)] == ["DELTA_PROTOCOL_CHANGED"]
    _assert_same_rows(spark, out, reference)


@pytest.mark.slow
def test_two_runs_of_the_same_batch_at_once_leave_one_copy(
    spark, mlflow_home: Path, reference: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    out = tmp_path / "preds"
    rejects = Path(f"{out}_rejects")
    # The table already holds another batch, which must come through untouched.
    day2 = _read(spark, reference).filter("batch_id = 'day-2'")
    delta_writes.write_delta(day2, storage.resolve(str(out)))
    delta_writes.write_delta(
        _read(spark, Path(f"{reference}_rejects")).filter("batch_id = 'day-2'"), storage.resolve(str(rejects))
    )
    _interleave_runs(monkeypatch, out, 1, tmp_path)
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.delta_writes"):
        runs = _together(
            first=lambda: _score(spark, mlflow_home, out, "day-1"),
            second=lambda: _score(spark, mlflow_home, out, "day-1"),
        )
    assert [r["rows_scored"] for r in runs.values()] == [38, 38]
    assert [c.split(":")[0] for c in _retries(caplog, out)] == ["DELTA_CONCURRENT_APPEND"]
    _assert_same_rows(spark, out, reference)
    # The copy that stayed is the one the retrying run wrote.
    (run_id,) = [
        r[0] for r in _read(spark, out).filter("batch_id = 'day-1'").select("mlflow_run_id").distinct().collect()
    ]
    assert run_id == runs["second"]["run_id"]


# ---- the model version of a scoring run -----------------------------------------------------------


@pytest.mark.slow
def test_moving_the_alias_mid_run_does_not_mix_versions(
    spark, mlflow_home: Path, race, tmp_path: Path, monkeypatch
) -> None:
    resolved, other = race["good"]["model_version"], race["bad"]["model_version"]
    assert registry.alias_version(MODEL, registry.CHAMPION) == resolved
    model_metadata, moved = registry.model_metadata, []

    def move_alias_first(model: registry.ResolvedModel) -> dict:
        registry.set_alias(MODEL, registry.CHAMPION, other)  # another run promotes, after this one resolved
        moved.append(model.version)
        return model_metadata(model)

    monkeypatch.setattr(registry, "model_metadata", move_alias_first)
    out = tmp_path / "preds"
    try:
        summary = _score(spark, mlflow_home, out, "mid-move")
    finally:
        registry.set_alias(MODEL, registry.CHAMPION, resolved)
    assert moved == [resolved] and summary["model_version"] == resolved

    raw = storage.read_table(spark, storage.resolve(INPUT))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("scoring_input"), source="s", batch_id="b")
    own = spark_models.load_model(spark, registry.resolve_version(MODEL, version=resolved)).transform(valid)
    expected = own.select("patient_id", F.lit(resolved).alias("model_version"), "prediction")
    got = _read(spark, out).select("patient_id", "model_version", "prediction")
    plain = [F.col(c).alias(c, metadata={}) for c in ("patient_id", "model_version", "prediction")]
    assert_approx_df_equality(
        got.select(*plain), expected.select(*plain), precision=1e-9, ignore_row_order=True, ignore_nullable=True
    )
