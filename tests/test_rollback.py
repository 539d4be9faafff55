"""A bad model reaches champion, and is undone: replay reproduces batches exactly (exit 0, 3 when a
stored prediction was tampered with, 2 when the input was vacuumed), ``rollback --rescore`` repairs
what the bad version wrote, a scoring run racing a rollback never mixes versions in a batch, and a
rescore killed with SIGKILL and run again leaves every batch whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from chispa import assert_df_equality

from diabetes_spark import jobs, ledger, registry, storage
from diabetes_spark.data import sample_path
from diabetes_spark.jobs.lifecycle import run_promote, run_rollback
from diabetes_spark.jobs.rescore import run_rescore
from diabetes_spark.params import ScoreParams, TrainParams
from tests.test_concurrency import HOOK_SECONDS, _together
from tests.test_misuse import check_error_line, run_cli

pytestmark = pytest.mark.slow

MODEL, EXPERIMENT = "rollback_model", "rollback-tests"
ROOT = Path(__file__).resolve().parent.parent


def _read(spark, path: Path | str):
    return storage.read_table(spark, storage.resolve(str(path)))


def _versions(spark, path: Path) -> dict[str, tuple[list[str], int]]:
    """batch -> (its model versions, its rows)."""
    rows = _read(spark, path).groupBy("batch_id").agg({"model_version": "collect_set", "*": "count"}).collect()
    return {r[0]: (sorted(r[1]), int(r[2])) for r in rows}


def _score(spark, home: Path, source: str, output: Path, batch: str, version: str = "") -> dict:
    params = ScoreParams(
        input=source, output=str(output), model_name=MODEL, experiment=EXPERIMENT, batch_id=batch, model_version=version
    )
    return jobs.run_batch_scoring(spark, params, home=home)


@pytest.fixture(scope="module")
def story(spark, mlflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 champion by the gate; batch b1 scored by it from the input's version 0. v2 (weaker, trained
    with promotion_mode=manual, so only challenger) promoted by hand; b2 (input version 1) and b3
    (a CSV file) scored by it."""
    base = tmp_path_factory.mktemp("rollback")
    csv = base / "batch.csv"
    csv.write_bytes(sample_path("scoring_batch.csv").read_bytes())
    rows = _read(spark, csv).drop("_corrupt_record")
    inp = base / "input"
    rows.limit(20).write.format("delta").save(str(inp))
    train = TrainParams(training_data="sample:diabetes.csv", experiment=EXPERIMENT, model_name=MODEL)
    first = jobs.run_training(spark, train, home=mlflow_home)
    out = base / "predictions"
    _score(spark, mlflow_home, str(inp), out, "b1")
    rows.write.format("delta").mode("overwrite").save(str(inp))
    manual = TrainParams(
        training_data="sample:diabetes.csv",
        experiment=EXPERIMENT,
        model_name=MODEL,
        reg_param=20.0,
        promotion_mode="manual",
    )
    second = jobs.run_training(spark, manual, home=mlflow_home)
    aliases = {a: registry.alias_version(MODEL, a) for a in ledger.ALIASES}
    run_promote(spark, model_name=MODEL, version="2", reason="a bad model reached champion", home=mlflow_home)
    _score(spark, mlflow_home, str(inp), out, "b2")
    _score(spark, mlflow_home, str(csv), out, "b3")
    return {"base": base, "input": inp, "csv": csv, "out": out, "first": first, "second": second, "aliases": aliases}


def test_manual_mode_only_sets_challenger(spark, mlflow_home: Path, story: dict) -> None:
    assert (story["second"]["promoted"], story["second"]["champion_version"]) == (False, "1")
    assert story["aliases"] == {"champion": "1", "challenger": "2"}
    rows = [
        (r["alias"], r["to_version"], r["action"])
        for r in ledger.Ledger(spark, _ledger_ref(spark, mlflow_home)).history(MODEL)
    ]
    assert rows[:4] == [
        ("challenger", "1", "gate"),
        ("champion", "1", "gate"),
        ("challenger", "2", "gate"),
        ("champion", "2", "promote"),
    ]


def _ledger_ref(spark, home: Path):
    return ledger.resolve(spark, "", home)


def _replay(out: Path, batch: str, capsys) -> tuple[int, dict, list[str]]:
    code, stdout, lines, _ = run_cli(["replay", "--quiet", "--json", "--output", str(out), "--batch-id", batch], capsys)
    return code, json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}, lines


def test_replay_reproduces_three_batches_of_two_versions_exactly(spark, story: dict, capsys) -> None:
    before = storage.delta_version(spark, storage.resolve(str(story["out"])))
    found = {}
    for batch in ("b1", "b2", "b3"):
        code, summary, lines = _replay(story["out"], batch, capsys)
        assert code == 0, lines
        found[batch] = (summary["model_version"], summary["rows_compared"], summary["rows_differing"])
    held = {batch: rows for batch, (_, rows) in _versions(spark, story["out"]).items()}
    assert held["b1"] < held["b2"] == held["b3"] == 38  # b1: the input's first version, 20 rows less its rejects
    assert found == {"b1": ("1", held["b1"], 0), "b2": ("2", 38, 0), "b3": ("2", 38, 0)}
    assert storage.delta_version(spark, storage.resolve(str(story["out"]))) == before  # replay wrote nothing


def test_a_tampered_prediction_makes_replay_exit_3(spark, story: dict, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    _read(spark, story["out"]).write.format("delta").partitionBy("batch_id").save(str(copy))
    spark.sql(
        f"UPDATE delta.`{copy}` SET prediction = prediction + 0.001 WHERE batch_id = 'b1' AND patient_id = 'P0006'"
    )
    code, summary, lines = _replay(copy, "b1", capsys)
    assert code == 3, lines
    n = _versions(spark, copy)["b1"][1]
    assert (summary["rows_compared"], summary["rows_differing"], summary["rows_missing"]) == (n, 1, 1)
    assert lines == [
        (
            f"diabetes-spark replay: batch 'b1' of {copy}: 1 of {n} stored rows differ from the replay "
            "(1 replayed rows have no identical stored row)"
        )
    ]


def test_a_scoring_run_racing_a_rollback_writes_one_version(spark, mlflow_home: Path, story: dict, monkeypatch) -> None:
    resolved, rolled = threading.Event(), threading.Event()
    metadata = registry.model_metadata

    def wait_for_the_rollback(model: registry.ResolvedModel) -> dict:
        if threading.current_thread().name == "score":
            resolved.set()
            assert rolled.wait(HOOK_SECONDS)
        return metadata(model)

    def rollback() -> dict:
        assert resolved.wait(HOOK_SECONDS)
        try:
            return run_rollback(spark, model_name=MODEL, reason="racing", home=mlflow_home)
        finally:
            rolled.set()

    monkeypatch.setattr(registry, "model_metadata", wait_for_the_rollback)
    runs = _together(
        score=lambda: _score(spark, mlflow_home, str(story["input"]), story["out"], "b4"), rollback=rollback
    )
    monkeypatch.setattr(registry, "model_metadata", metadata)
    assert (runs["rollback"]["from_version"], runs["rollback"]["to_version"]) == ("2", "1")
    assert runs["score"]["model_version"] == "2" and _versions(spark, story["out"])["b4"] == (["2"], 38)
    run_promote(spark, model_name=MODEL, version="2", reason="back for the next test", home=mlflow_home)


def test_rollback_rescore_repairs_every_batch_the_version_wrote(
    spark, mlflow_home: Path, story: dict, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    out = story["out"]
    before = _versions(spark, out)
    b1 = _read(spark, out).where("batch_id = 'b1'")
    argv = [
        "rollback",
        "--quiet",
        "--json",
        "--model-name",
        MODEL,
        "--reason",
        "v2 is bad",
        "--rescore",
        "--output",
        str(out),
        "--experiment",
        EXPERIMENT,
    ]
    code, stdout, lines, _ = run_cli(argv, capsys)
    assert code == 0, lines
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["from_version"], summary["to_version"]) == ("2", "1")
    assert summary["rescore"]["batches_rescored"] == ["b2", "b3", "b4"]
    after = _versions(spark, out)
    assert after == {batch: (["1"], rows) for batch, (_, rows) in before.items()}
    assert_df_equality(_read(spark, out).where("batch_id = 'b1'"), b1, ignore_row_order=True)
    for batch in ("b2", "b3"):  # a rescored batch replays as exactly as a scored one
        code, replayed, lines = _replay(out, batch, capsys)
        assert code == 0 and replayed["rows_differing"] == 0, lines


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["replay", "--batch-id", "nope"], "batch 'nope' is not in"),
        (["rescore", "--model-version", "9", "--model-name", MODEL], f"no batch of {{out}} was scored by {MODEL} v9"),
        (["rescore", "--model-version", "1", "--model-name", MODEL], f"{MODEL} v1 is still the champion"),
    ],
    ids=["replay-no-such-batch", "rescore-no-such-version", "rescore-the-champion"],
)
def test_what_does_not_exist_exits_2_and_writes_nothing(
    spark, story: dict, argv: list[str], names: str, capsys, monkeypatch, mlflow_home: Path
) -> None:
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    before = storage.delta_version(spark, storage.resolve(str(story["out"])))
    code, _, lines, _ = run_cli([*argv, "--output", str(story["out"])], capsys)
    assert code == 2
    check_error_line(argv[0], lines, names.format(out=story["out"]))
    assert storage.delta_version(spark, storage.resolve(str(story["out"]))) == before


def test_a_rescore_killed_then_rerun_leaves_every_batch_whole(
    spark, mlflow_home: Path, story: dict, tmp_path: Path
) -> None:
    out = tmp_path / "k"
    for batch in ("k1", "k2", "k3"):
        _score(spark, mlflow_home, str(story["input"]), out, batch, version="2")
    script = tmp_path / "killed_rescore.py"
    script.write_text(
        "import os, signal, sys\n"
        "from diabetes_spark import cli\n"
        "from diabetes_spark.jobs import rescore\n"
        "real = rescore.tables.write\n"
        "def write_then_die(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # after the first batch's commit\n"
        "rescore.tables.write = write_then_die\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    argv = [
        "rescore",
        "--quiet",
        "--output",
        str(out),
        "--model-version",
        "2",
        "--model-name",
        MODEL,
        "--experiment",
        EXPERIMENT,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIABETES_SPARK_HOME": str(mlflow_home)}
    done = subprocess.run(
        [sys.executable, str(script), *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == -9, done.stderr[-3000:]
    assert _versions(spark, out) == {"k1": (["1"], 38), "k2": (["2"], 38), "k3": (["2"], 38)}
    summary = run_rescore(
        spark, output=str(out), model_version="2", model_name=MODEL, experiment=EXPERIMENT, home=mlflow_home
    )
    assert summary["batches_rescored"] == ["k2", "k3"]
    assert _versions(spark, out) == {batch: (["1"], 38) for batch in ("k1", "k2", "k3")}


def test_replay_after_vacuum_past_retention_exits_2_with_the_reason(spark, story: dict, capsys) -> None:
    inp = story["input"]
    _read(spark, inp).write.format("delta").mode("overwrite").save(str(inp))  # b1's files are no longer current
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{inp}` RETAIN 0 HOURS").collect()
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    code, _, lines = _replay(story["out"], "b1", capsys)
    assert code == 2
    check_error_line(
        "replay",
        lines,
        f"cannot replay batch 'b1': input {inp} v0 can no longer be read at its recorded version (vacuumed past its retention",
    )
