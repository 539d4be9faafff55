"""Provenance: every training and scoring run records, with ``mlflow.log_input``, the table and the
Delta version it read (or the file and its fingerprint), classic and over Spark Connect against a
real MLflow server; a batch traces from any of its rows to its input version and model version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diabetes_spark import jobs, storage
from diabetes_spark.params import ScoreParams, TrainParams
from diabetes_spark.registry import MlflowLocation
from tests.mlflow_server import mlflow_server
from tests.test_connect import _over_connect, _summary, connect_url  # noqa: F401 (a fixture)

MODEL, EXPERIMENT = "provenance_model", "provenance"


def _inputs(run_id: str) -> list[tuple[str, str, dict]]:
    """``(context, dataset name, source)`` of each input of the run."""
    out = []
    for item in MlflowClient().get_run(run_id).inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in item.tags}.get("mlflow.data.context", "")
        out.append((context, item.dataset.name, {"type": item.dataset.source_type, **json.loads(item.dataset.source)}))
    return sorted(out, key=lambda x: x[0])


def _delta_input(spark, path: Path, commits: int) -> str:
    """The sample training data as a Delta table with ``commits`` versions (the last holds all rows)."""
    rows = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    for _ in range(commits):
        rows.write.format("delta").mode("overwrite").save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def runs(spark, mlflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("provenance")
    table = _delta_input(spark, base / "training", commits=3)  # version 2
    trained = jobs.run_training(
        spark, TrainParams(training_data=table, experiment=EXPERIMENT, model_name=MODEL), home=mlflow_home
    )
    score = ScoreParams(input=table, output=str(base / "p"), model_name=MODEL, experiment=EXPERIMENT)
    scored = jobs.run_batch_scoring(spark, score, home=mlflow_home)
    csv = ScoreParams(
        input="sample:scoring_batch.csv", output=str(base / "pf"), model_name=MODEL, experiment=EXPERIMENT
    )
    from_file = jobs.run_batch_scoring(spark, csv, home=mlflow_home)
    return {"table": table, "train": trained, "score": scored, "file": from_file, "output": base / "p"}


def test_training_records_its_table_version_and_splits(runs: dict) -> None:
    found = _inputs(runs["train"]["run_id"])
    assert [context for context, *_ in found] == ["evaluation", "training", "training"]
    sources = {(context, name): source for context, name, source in found}
    assert sources[("training", "training")] == {"type": "delta_table", "path": runs["table"], "delta_table_version": 2}
    for context, split in (("training", "train"), ("evaluation", "test")):
        assert sources[(context, f"training ({split} split, seed 42)")]["delta_table_version"] == 2


def test_scoring_records_its_table_version_and_a_file_its_fingerprint(runs: dict) -> None:
    ((context, name, source),) = _inputs(runs["score"]["run_id"])
    assert (context, name, source) == (
        "scoring",
        "training",
        {"type": "delta_table", "path": runs["table"], "delta_table_version": 2},
    )
    ((context, name, source),) = _inputs(runs["file"]["run_id"])
    tags = MlflowClient().get_run(runs["file"]["run_id"]).data.tags
    assert (context, source["type"]) == ("scoring", "spark")
    assert source["path"].endswith("scoring_batch.csv") and tags["input_fingerprint"] in runs["file"]["batch_id"]


def test_a_row_traces_to_its_input_version_and_model_version(spark, runs: dict) -> None:
    row = storage.read_table(spark, storage.resolve(str(runs["output"]))).where("batch_id = 'training-v2'").first()
    run = MlflowClient().get_run(row["mlflow_run_id"])
    assert (run.data.tags["input_ref"], run.data.tags["input_version"]) == (runs["table"], "2")
    assert run.data.params["resolved_model_version"] == row["model_version"] == runs["train"]["model_version"]


@pytest.mark.slow
def test_inputs_ledger_rollback_and_replay_over_connect_with_a_remote_mlflow(
    spark,
    connect_url: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Over Spark Connect against a real MLflow server: the inputs and their versions, the ledger's
    rows, ``rollback --rescore`` and ``replay``."""
    table = _delta_input(spark, tmp_path / "training", commits=2)  # version 1
    out = str(tmp_path / "p")
    train = ["train", "--training-data", table, "--model-name", MODEL, "--json"]
    score = ["score", "--input", table, "--output", out, "--model-name", MODEL, "--json"]
    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as tracking:
        env = {"MLFLOW_TRACKING_URI": tracking, "DIABETES_SPARK_HOME": str(tmp_path / "home")}
        trained = _summary(_over_connect(connect_url, train, env=env))
        scored = _summary(_over_connect(connect_url, [*score, "--batch-id", "c1"], env=env))
        manual = _summary(
            _over_connect(connect_url, [*train, "--promotion-mode", "manual", "--reg-param", "5"], env=env)
        )
        promote = ["promote", "--model-name", MODEL, "--version", "2", "--reason", "try v2", "--json"]
        _summary(_over_connect(connect_url, promote, env=env))
        _summary(_over_connect(connect_url, [*score, "--batch-id", "c2"], env=env))
        rollback = ["rollback", "--model-name", MODEL, "--reason", "v2 is bad", "--rescore", "--output", out, "--json"]
        rolled = _summary(_over_connect(connect_url, rollback, env=env))
        replay = ["replay", "--output", out, "--json"]
        replayed = [_summary(_over_connect(connect_url, [*replay, "--batch-id", b], env=env)) for b in ("c1", "c2")]
        with MlflowLocation(tracking_uri=tracking, registry_uri=tracking).active():
            found = {run: _inputs(summary["run_id"]) for run, summary in (("train", trained), ("score", scored))}
    delta = {"type": "delta_table", "path": table, "delta_table_version": 1}
    assert [(c, s) for c, _, s in found["score"]] == [("scoring", delta)]
    assert [(c, s["delta_table_version"]) for c, _, s in found["train"]] == [
        ("evaluation", 1),
        ("training", 1),
        ("training", 1),
    ]
    assert manual["champion_version"] == "1" and (rolled["from_version"], rolled["to_version"]) == ("2", "1")
    assert rolled["rescore"]["batches_rescored"] == ["c2"]
    assert [(r["model_version"], r["rows_differing"]) for r in replayed] == [("1", 0), ("1", 0)]
    rows = storage.read_table(spark, storage.resolve(str(tmp_path / "home" / "model_alias_events")))
    moves = rows.orderBy("moved_at").select("alias", "to_version", "action").collect()
    assert [tuple(r) for r in moves] == [
        ("challenger", "1", "gate"),
        ("champion", "1", "gate"),
        ("challenger", "2", "gate"),
        ("champion", "2", "promote"),
        ("champion", "1", "rollback"),
    ]
