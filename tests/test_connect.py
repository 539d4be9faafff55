"""The loop over Spark Connect, as on serverless and standard-access compute, against a real Spark
Connect server started from the installed pyspark with Delta Lake, on 127.0.0.1.

The same ingest, training (a tree model, so scoring must load it) and scoring run classically in
this process and over Connect in a child process (``SPARK_REMOTE``), whose MLflow is a real tracking
server. The written tables, the registered versions and their aliases must match; a model trained
classically must score the same over Connect. A server that does not answer, or has no Delta, fails
the job at its start with exit code 2 and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from conftest import TEST_SPARK_CONF
from diabetes_spark import cli, registry, storage
from diabetes_spark.registry import MlflowLocation
from tests import connect_launcher
from tests.mlflow_server import _free_port, mlflow_server

pytestmark = pytest.mark.slow

MODEL = "connect_model"
#: Columns that differ between any two runs (times, run ids); everything else must match.
PER_RUN = ("scored_at", "mlflow_run_id", "rejected_at", "batch_id")


@pytest.fixture(scope="module")
def connect_url(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server with Delta on 127.0.0.1, with the test session's jars and settings."""
    folder = tmp_path_factory.mktemp("connect-server")
    port = _free_port()
    conf = {**TEST_SPARK_CONF, "spark.sql.warehouse.dir": str(folder / "warehouse")}
    jars = spark.conf.get("spark.jars").split(",")
    process = connect_launcher.start(port, conf=conf, jars=jars, master="local[2]", log=folder / "server.log")
    yield f"sc://127.0.0.1:{port}"
    connect_launcher.stop(process)


def _over_connect(url: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None):
    """The console script in a child process with ``SPARK_REMOTE`` set (no JVM of its own)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    environment.update({"SPARK_REMOTE": url, **(env or {})})  # MLflow: the given store, else DIABETES_SPARK_HOME's
    environment.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    command = [sys.executable, "-m", "diabetes_spark", *argv]
    return subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=900)


def _summary(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _classic(argv: list[str]) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*argv, "--json", "--quiet"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(spark, connect_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ingest, train a GBT model and score, once classically and once over Connect; then score over
    Connect with the classically trained model (CLI), and the Connect-trained one through the notebook."""
    base = tmp_path_factory.mktemp("connect")
    classic, remote = base / "classic", base / "remote"
    train = ["--estimator", "gbt", "--model-name", MODEL]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIABETES_SPARK_HOME", str(classic / "home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
        out = {"classic_ingest": _classic(["ingest", "--source", "sample:diabetes.csv", "--table", str(classic / "t")])}
        out["classic_train"] = _classic(["train", "--training-data", str(classic / "t"), *train])
        score = ["score", "--input", "sample:scoring_batch.csv", "--model-name", MODEL]
        out["classic_score"] = _classic([*score, "--output", str(classic / "p")])
    # The classically trained model, scored over Connect through the CLI.
    home = {"DIABETES_SPARK_HOME": str(classic / "home")}
    out["cross_score"] = _summary(
        _over_connect(connect_url, [*score, "--output", str(base / "cross"), "--json"], env=home)
    )
    with mlflow_server(tmp_path_factory.mktemp("connect-mlflow")) as tracking:
        env = {"MLFLOW_TRACKING_URI": tracking, "DIABETES_SPARK_HOME": str(remote / "home")}
        ingest = ["ingest", "--source", "sample:diabetes.csv", "--table", str(remote / "t"), "--json"]
        out["remote_ingest"] = _summary(_over_connect(connect_url, ingest, env=env))
        out["remote_train"] = _summary(
            _over_connect(connect_url, ["train", "--training-data", str(remote / "t"), *train, "--json"], env=env)
        )
        widgets = {"input": "sample:scoring_batch.csv", "output": str(remote / "p"), "model_name": MODEL}
        widgets["storage_account_secret"] = ""
        notebook = ["notebook", "score", "--json", *(f"--widget={k}={v}" for k, v in widgets.items())]
        out["remote_score"] = _summary(_over_connect(connect_url, notebook, env=env))
        with MlflowLocation(tracking_uri=tracking, registry_uri=tracking).active():
            out["remote_aliases"] = _aliases()
    with MlflowLocation.local(classic / "home").active():
        out["classic_aliases"] = _aliases()
    return {**out, "classic": classic, "remote": remote, "cross": base / "cross"}


def _aliases() -> dict[str, str | None]:
    return {alias: registry.alias_version(MODEL, alias) for alias in (registry.CHAMPION, registry.CHALLENGER)}


def _table(spark, path: Path):
    df = storage.read_table(spark, storage.resolve(str(path)))
    return df.drop(*[c for c in PER_RUN if c in df.columns])


def test_ingested_tables_match(spark, runs: dict) -> None:
    assert runs["classic_ingest"]["rows_written"] == runs["remote_ingest"]["rows_written"]
    assert_df_equality(_table(spark, runs["remote"] / "t"), _table(spark, runs["classic"] / "t"), ignore_row_order=True)


def test_training_registers_the_same_version_and_aliases(runs: dict) -> None:
    for key in ("model_version", "promoted", "champion_version", "rows_in", "rows_rejected"):
        assert runs["remote_train"][key] == runs["classic_train"][key], key
    assert runs["remote_train"]["metrics"] == pytest.approx(runs["classic_train"]["metrics"], rel=1e-9)
    assert runs["remote_aliases"] == runs["classic_aliases"] == {"champion": "1", "challenger": "1"}


@pytest.mark.parametrize("other", ["remote", "cross"])
def test_predictions_match_the_classic_run(spark, runs: dict, other: str) -> None:
    expected = _table(spark, runs["classic"] / "p")
    assert_approx_df_equality(
        _table(spark, runs[other] / "p" if other == "remote" else runs[other]), expected, 1e-9, ignore_row_order=True
    )
    summary = runs["remote_score" if other == "remote" else "cross_score"]
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_rejected"]) == (40, 38, 2)


def test_an_unreachable_server_fails_at_the_start(tmp_path: Path) -> None:
    url = f"sc://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    score = ["score", "--input", "sample:scoring_batch.csv", "--output", str(tmp_path / "p"), "--model-name", MODEL]
    result = _over_connect(url, score)
    assert result.returncode == cli.EXIT_USER_ERROR, result.stderr
    assert f"no Spark Connect server answers at SPARK_REMOTE={url}" in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "p").exists() and not (tmp_path / "p_rejects").exists()


def test_a_server_without_delta_fails_at_the_start(spark, tmp_path: Path) -> None:
    port = _free_port()
    jars = spark.conf.get("spark.jars").split(",")
    conf = {**TEST_SPARK_CONF, "spark.sql.warehouse.dir": str(tmp_path / "warehouse")}
    process = connect_launcher.start(port, conf=conf, jars=jars, master="local[1]", delta=False, log=tmp_path / "log")
    try:
        home = {"DIABETES_SPARK_HOME": str(tmp_path / "home")}
        ingest = ["ingest", "--source", "sample:diabetes.csv", "--table", str(tmp_path / "t")]
        result = _over_connect(f"sc://127.0.0.1:{port}", ingest, env=home)
    finally:
        connect_launcher.stop(process)
    assert result.returncode == cli.EXIT_USER_ERROR, result.stderr
    assert "has no Delta Lake" in result.stderr and "SPARK_REMOTE=sc://127.0.0.1" in result.stderr
    assert not (tmp_path / "t").exists()


def test_training_without_a_shared_folder_fails_at_the_start(connect_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    train = ["train", "--training-data", "sample:diabetes.csv", "--model-name", MODEL, "--dfs-tmpdir", "dbfs:/tmp/x"]
    result = _over_connect(connect_url, train, env={"DIABETES_SPARK_HOME": str(home)})
    assert result.returncode == cli.EXIT_USER_ERROR, result.stderr
    assert "dfs_tmpdir 'dbfs:/tmp/x' is not a folder of this machine" in result.stderr
    assert "/Volumes/" in result.stderr and "dedicated (classic) cluster" in result.stderr
    with MlflowLocation.local(home).active():
        import mlflow

        assert mlflow.search_runs(search_all_experiments=True).empty  # nothing was read or logged
