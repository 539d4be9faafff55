"""The alias ledger: the training gate, ``promote``, ``rollback`` and a move made outside (with
``MlflowClient``) each leave one row; the ledger is append-only and two writers at once both land;
bad input (no reason, a version that does not exist, a ledger of another schema) exits 2 and
writes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from chispa import assert_df_equality
from mlflow.tracking import MlflowClient

from conftest import TRAINED_MODEL
from diabetes_spark import ledger, registry, storage
from diabetes_spark.errors import OutputError, ParamError, RegistryError
from diabetes_spark.jobs.lifecycle import run_promote, run_rollback
from tests.test_concurrency import _paused, _retries, _together
from tests.test_misuse import check_error_line, run_cli

MODEL = "ledger_model"


def _ledger(spark, home: Path) -> ledger.Ledger:
    return ledger.Ledger(spark, ledger.resolve(spark, "", home))


def _moves(spark, home: Path, model: str = MODEL) -> list[tuple]:
    return [
        (r["alias"], r["from_version"], r["to_version"], r["action"], r["moved_by"])
        for r in _ledger(spark, home).history(model)
    ]


@pytest.fixture(scope="module")
def versions(mlflow_home: Path) -> list[str]:
    """Three versions of :data:`MODEL` (no champion yet); version 2's tags say it failed validation."""
    client = MlflowClient()
    client.create_registered_model(MODEL)
    run = client.create_run(client.create_experiment("ledger-tests")).info.run_id
    made = [client.create_model_version(MODEL, f"runs:/{run}/model", run_id=run).version for _ in range(3)]
    client.set_model_version_tag(MODEL, "2", "validation_verdict", "failed")
    client.set_model_version_tag(MODEL, "2", "validation_failures", "rmse 80 > 60")
    client.set_model_version_tag(MODEL, "3", "validation_rmse", "52.5")
    return [str(v) for v in made]


def test_the_training_gate_leaves_a_row_per_move(spark, mlflow_home: Path, trained: dict) -> None:
    rows = _ledger(spark, mlflow_home).history(TRAINED_MODEL)
    found = [(r["alias"], r["from_version"], r["to_version"], r["action"], r["mlflow_run_id"]) for r in rows]
    assert found == [
        ("challenger", None, "1", "gate", trained["run_id"]),
        ("champion", None, "1", "gate", trained["run_id"]),
    ]
    assert rows[1]["reason"] == "no champion yet" and rows[1]["metrics"]["rmse"] == pytest.approx(
        trained["metrics"]["rmse"]
    )
    assert rows[0]["moved_by"] == ledger.current_user(spark) != ""


def test_promote_rollback_and_an_outside_move_each_leave_a_row(
    spark, mlflow_home: Path, versions: list[str], capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    me = ledger.current_user(spark)
    run_promote(spark, model_name=MODEL, version="1", reason="first release", home=mlflow_home)
    code, out, _, _ = run_cli(
        ["promote", "--model-name", MODEL, "--version", "3", "--reason", "better", "--json"], capsys
    )
    assert code == 0 and '"to_version": "3"' in out
    MlflowClient().set_registered_model_alias(MODEL, registry.CHAMPION, "1")  # a hand edit in the UI
    moved = run_rollback(spark, model_name=MODEL, reason="v1 misbehaves", home=mlflow_home)  # the ledger found it
    assert (moved["from_version"], moved["to_version"]) == ("1", "3")
    assert moved["moved"] == f"champion of {MODEL}: v1 -> v3 (rollback by {me}: v1 misbehaves)"
    assert _moves(spark, mlflow_home) == [
        ("champion", None, "1", "promote", me),
        ("champion", "1", "3", "promote", me),
        ("champion", "3", "1", "outside", "outside"),
        ("champion", "1", "3", "rollback", me),
    ]
    row = _ledger(spark, mlflow_home).history(MODEL)[1]
    assert (row["reason"], dict(row["metrics"]), row["mlflow_run_id"]) == (
        "better",
        {"rmse": 52.5},
        row["mlflow_run_id"],
    )
    # Rolling back again walks back past the hand edit's version to the first promotion's.
    again = run_rollback(spark, model_name=MODEL, reason="and back", to="1", home=mlflow_home)
    assert (again["from_version"], again["to_version"]) == ("3", "1")


def test_a_version_that_failed_validation_needs_force(
    spark, mlflow_home: Path, versions: list[str], capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    before = _moves(spark, mlflow_home)
    code, _, lines, _ = run_cli(["promote", "--model-name", MODEL, "--version", "2", "--reason", "try"], capsys)
    assert code == 2
    check_error_line("promote", lines, "v2 failed validation (tag validation_verdict=failed: rmse 80 > 60)")
    assert _moves(spark, mlflow_home) == before and registry.alias_version(MODEL, registry.CHAMPION) != "2"
    forced = run_promote(spark, model_name=MODEL, version="2", reason="hotfix", force=True, home=mlflow_home)
    assert forced["reason"] == "hotfix [forced past failed validation]"
    assert _moves(spark, mlflow_home)[-1][:4] == ("champion", before[-1][2], "2", "promote")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["promote", "--version", "9", "--reason", "r"], "version 9 of model 'ledger_model' does not exist"),
        (["promote", "--version", "1", "--reason", " "], "promote needs a reason (--reason TEXT)"),
        (["rollback", "--reason", ""], "rollback needs a reason (--reason TEXT)"),
        (["rollback", "--to", "7", "--reason", "r"], "version 7 of model 'ledger_model' does not exist"),
        (["rollback", "--reason", "r", "--rescore"], "rollback --rescore needs --output TABLE"),
    ],
    ids=["no-such-version", "blank-reason", "rollback-blank-reason", "rollback-to-missing", "rescore-no-output"],
)
def test_bad_input_exits_2_and_moves_nothing(
    spark, mlflow_home: Path, versions: list[str], argv: list[str], names: str, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    before, champion = _moves(spark, mlflow_home), registry.alias_version(MODEL, registry.CHAMPION)
    code, _, lines, _ = run_cli([*argv, "--model-name", MODEL], capsys)
    assert code == 2
    check_error_line(argv[0], lines, names)
    assert _moves(spark, mlflow_home) == before and registry.alias_version(MODEL, registry.CHAMPION) == champion


def test_a_ledger_of_another_schema_exits_2_and_nothing_moves(
    spark, mlflow_home: Path, versions: list[str], tmp_path: Path, capsys
) -> None:
    other = tmp_path / "other"
    spark.createDataFrame([("a", 1)], "model_name string, n int").write.format("delta").save(str(other))
    champion = registry.alias_version(MODEL, registry.CHAMPION)
    argv = ["promote", "--model-name", MODEL, "--version", "1", "--reason", "r", "--alias-ledger", str(other)]
    code, _, lines, _ = run_cli(argv, capsys)
    assert code == 2
    check_error_line("promote", lines, f"alias ledger {other} exists with other columns (model_name string, n int)")
    assert registry.alias_version(MODEL, registry.CHAMPION) == champion
    assert storage.delta_version(spark, storage.resolve(str(other))) == 0
    with pytest.raises(OutputError):
        ledger.Ledger(spark, storage.resolve(str(other))).check()


def _move(n: int) -> ledger.Move:
    return ledger.Move("m", "champion", str(n), str(n + 1), ledger.PROMOTE, "someone", f"move {n}")


@pytest.mark.parametrize("existing", [False, True], ids=["empty-location", "existing-ledger"])
def test_two_writers_at_once_both_land(spark, tmp_path: Path, monkeypatch, caplog, existing: bool) -> None:
    table = tmp_path / "ledger"
    book = ledger.Ledger(spark, storage.resolve(str(table)))
    if existing:
        book.append(_move(0))
    frame = ledger._frame

    def paused(session, rows):
        import threading

        # As _interleaved: the first waits until the second has begun, the second until the first committed.
        df, begun = frame(session, rows), str(tmp_path / "second-begun")
        if threading.current_thread().name == "first":
            return _paused(df, touch=None, wait_for=begun, column="reason")
        committed = table / "_delta_log" / f"{1 if existing else 0:020d}.json"
        return _paused(df, touch=begun, wait_for=str(committed), column="reason")

    monkeypatch.setattr(ledger, "_frame", paused)
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.delta_writes"):
        _together(first=lambda: book.append(_move(1)), second=lambda: book.append(_move(2)))
    # Blind appends: only two first writers creating the table conflict (and the loser retries).
    assert [c.split(":")[0] for c in _retries(caplog, table)] == ([] if existing else ["DELTA_PROTOCOL_CHANGED"])
    monkeypatch.setattr(ledger, "_frame", frame)
    expected = [_move(n) for n in ([0] if existing else []) + [1, 2]]
    got = storage.read_table(spark, book.ref).select("from_version", "reason")
    want = spark.createDataFrame([(m.from_version, m.reason) for m in expected], "from_version string, reason string")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_the_ledger_refuses_anything_but_appends(spark, tmp_path: Path) -> None:
    book = ledger.Ledger(spark, storage.resolve(str(tmp_path / "ledger")))
    book.append(_move(0))
    with pytest.raises(Exception, match=r"(?i)append"):
        spark.sql(f"DELETE FROM {book.ref.identifier}").collect()
    assert len(book.history("m")) == 1


def _rows(*moves: tuple[str, str | None, str]) -> list[dict]:
    return [{"action": action, "from_version": was, "to_version": now} for action, was, now in moves]


@pytest.mark.parametrize(
    ("moves", "current", "before"),
    [
        (_rows(("gate", None, "1"), ("gate", "1", "2")), "2", "1"),
        (_rows(("gate", None, "1"), ("gate", "1", "2"), ("promote", "2", "3"), ("rollback", "3", "2")), "2", "1"),
        (_rows(("gate", None, "1"), ("outside", "1", "4")), "4", "1"),
        (_rows(("gate", None, "1")), "1", None),
        (_rows(("gate", None, "1"), ("gate", "1", "2")), "5", None),  # moved since: the ledger cannot say
    ],
    ids=["after-a-gate", "rolled-back-once-already", "after-an-outside-move", "the-first", "unrecorded"],
)
def test_the_version_before_the_champion(moves: list[dict], current: str, before: str | None) -> None:
    assert ledger.champion_before(moves, current) == before  # type: ignore[arg-type]


def test_a_wrong_ledger_parameter_is_refused_before_training(spark, mlflow_home: Path, tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="promotion_mode must be one of auto, manual; got 'sometimes'"):
        from diabetes_spark.params import TrainParams

        TrainParams(training_data="x", promotion_mode="sometimes")
    with pytest.raises(RegistryError, match="has no champion"):
        run_rollback(
            spark, model_name="no_such_model_here", reason="r", home=mlflow_home, alias_ledger=str(tmp_path / "l")
        )
