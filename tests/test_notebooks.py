"""The two Databricks notebooks, run unchanged off Databricks, and the local dbutils stand-in."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import mlflow
import pytest
from chispa import assert_df_equality
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from diabetes_spark import cli, params, registry, storage
from diabetes_spark.demo import run_demo
from diabetes_spark.errors import NotebookError
from diabetes_spark.local_dbutils import LocalDbutils, NotebookExit, secret_env_name
from diabetes_spark.notebook import NOTEBOOKS, parse_notebook, run_notebook
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import environment
from tests import make_notebooks

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"
#: A widget declaration and its local default (on Databricks some take a workspace default first).
WIDGET = re.compile(r'^dbutils\.widgets\.text\("([^"]+)", (?:f?"[^"]*" if workspace else )?"([^"]*)"\)', re.M)
SENTINEL_KEY = "c2VudGluZWwtYWRscy1rZXktOTcxMw=="


def declared_widgets(path: Path) -> dict[str, str]:
    """The widgets a notebook declares, read from its source."""
    return dict(WIDGET.findall(path.read_text()))


@pytest.mark.parametrize(("notebook", "cls"), [("train", params.TrainParams), ("score", params.ScoreParams)])
def test_notebook_table_and_widgets_are_generated_from_params(notebook: str, cls: type) -> None:
    path = NB / NOTEBOOKS[notebook]
    text = path.read_text(encoding="utf-8")
    assert text == make_notebooks.render(text, cls, path.name), "run `python tests/make_notebooks.py`"
    assert declared_widgets(path) == params.notebook_widgets(cls)
    assert len(WIDGET.findall(text)) == len(params.notebook_widgets(cls)), "a widget is declared twice"
    assert make_notebooks.JOB_PARAMS[path.name] is cls  # `python tests/make_notebooks.py --check` renders the same


@pytest.mark.parametrize(
    ("notebook", "cls", "required"),
    [
        ("train", params.TrainParams, {"training_data": "t"}),
        ("score", params.ScoreParams, {"input": "i", "output": "o"}),
    ],
)
def test_on_databricks_the_widget_defaults_are_the_workspace_ones(
    spark, notebook: str, cls: type, required: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A "Run all" in a workspace with no widget edited: Unity Catalog storage access (no storage secret is
    read), an experiment in the user's folder, a catalog.schema.model name. Off Databricks the local
    defaults stay. The widget cell runs as written, with the local dbutils stand-in."""
    from diabetes_spark.notebook import NotebookContext
    from diabetes_spark.telemetry import COMPONENT_TRAIN

    cell = next(
        c for c in parse_notebook((NB / NOTEBOOKS[notebook]).read_text()) if "dbutils.widgets.text(" in c.source
    )
    local = params.notebook_widgets(cls)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    off = LocalDbutils()
    exec(cell.source, {"spark": spark, "dbutils": off})
    assert off.widgets.declared == local
    assert (local["storage_account_secret"], local["experiment"], local["model_name"]) == (
        "adls-account-name",
        "diabetes-progression",
        "diabetes_progression",
    )

    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    on = LocalDbutils(required)
    exec(cell.source, {"spark": spark, "dbutils": on})
    workspace = {
        "storage_account_secret": "",
        "storage_container_secret": "",
        "storage_key_secret": "",
        "experiment": f"/Users/{spark.sparkContext.sparkUser()}/diabetes-progression",
        "model_name": "spark_catalog.default.diabetes_progression",  # local Spark's current catalog and schema
    }
    assert on.widgets.declared == {**local, **workspace}
    context = NotebookContext.open(spark, on, component=COMPONENT_TRAIN)  # no secret in the environment
    try:
        job = context.params(cls)
    finally:
        context.close()
    assert context.storage_root is None and context.secret_values == []
    assert (job.experiment, job.model_name) == (workspace["experiment"], workspace["model_name"])


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.values()))
def test_notebooks_are_databricks_source_with_pip_and_one_job_call(notebook: str) -> None:
    cells = parse_notebook((NB / notebook).read_text())
    magics = [c.magic for c in cells if c.magic]
    assert magics == ["%md", "%pip"]
    pip = next(c for c in cells if c.magic == "%pip")
    assert "# MAGIC %pip install --quiet $wheel" in pip.source
    after_pip = cells[cells.index(pip) + 1].source
    assert "dbutils.library.restartPython()" in after_pip
    code = "\n".join(c.source for c in cells if not c.magic)
    assert len(re.findall(r"jobs\.run_\w+\(", code)) == 1
    assert "raise" in code and "logger().exception" in code and "dbutils.notebook.exit(" in code


def test_local_dbutils_widgets_secrets_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dbutils = LocalDbutils({"a": "given"})
    dbutils.widgets.text("a", "default")
    dbutils.widgets.text("b", "default-b")
    assert (dbutils.widgets.get("a"), dbutils.widgets.get("b")) == ("given", "default-b")
    with pytest.raises(ValueError, match="widget 'c' is not declared"):
        dbutils.widgets.get("c")

    monkeypatch.setenv(secret_env_name("my-scope", "adls-account-key"), "s3cret")
    assert secret_env_name("my-scope", "adls-account-key") == "DIABETES_SPARK_SECRET__MY_SCOPE__ADLS_ACCOUNT_KEY"
    assert dbutils.secrets.get(scope="my-scope", key="adls-account-key") == "s3cret"
    assert [m.key for m in dbutils.secrets.list("my-scope")] == ["adls-account-key"]
    assert "my_scope" in dbutils.secrets.listScopes()
    with pytest.raises(KeyError, match="secret 'nope' does not exist in scope 'my-scope'") as info:
        dbutils.secrets.get(scope="my-scope", key="nope")
    assert "s3cret" not in str(info.value)

    with pytest.raises(NotebookExit) as done:
        dbutils.notebook.exit("bye")
    assert done.value.value == "bye"


@pytest.fixture(scope="module")
def demo(spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``diabetes-spark demo``: ingest, then both notebooks, in a fresh local workspace folder."""
    home = tmp_path_factory.mktemp("demo-home")
    with environment({"DIABETES_SPARK_HOME": str(home)}), MlflowLocation.local(home).active():
        summary = run_demo(spark, notebooks=NB, home=home)  # the demo's own store, whatever the session's
    summary["home"] = home
    return summary


@pytest.mark.slow
def test_demo_runs_both_notebooks_to_a_champion_and_predictions(spark, demo: dict) -> None:
    assert (demo["ingest"]["rows_written"], demo["ingest"]["rows_rejected"]) == (437, 5)
    train, score = demo["train"], demo["score"]
    assert (train["model_version"], train["promoted"]) == ("1", True)
    with MlflowLocation.local(demo["home"]).active():
        assert registry.alias_version(params.DEFAULT_MODEL_NAME, registry.CHAMPION) == "1"
        assert MlflowClient().get_run(train["run_id"]).info.status == "FINISHED"

    assert (score["rows_in"], score["rows_scored"], score["rows_rejected"], score["model_version"]) == (40, 38, 2, "1")
    predictions = storage.read_table(spark, storage.resolve(demo["tables"]["predictions"]))
    got = predictions.groupBy("model_name", "model_version", "batch_id").agg(
        F.count(F.lit(1)).alias("rows"), F.countDistinct("patient_id").alias("ids")
    )
    want = spark.createDataFrame(
        [(params.DEFAULT_MODEL_NAME, "1", score["batch_id"], 38, 38)],
        "model_name string, model_version string, batch_id string, rows long, ids long",
    )
    assert_df_equality(got, want, ignore_nullable=True)
    assert demo["mlflow_ui"].startswith("mlflow ui --backend-store-uri sqlite:///")
    experiment = train["experiment_id"]
    assert demo["mlflow_runs"] == f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"


@pytest.mark.slow
def test_failing_step_fails_the_notebook_and_marks_the_run_failed(
    spark,
    mlflow_home: Path,
    demo: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog,
) -> None:
    # Real-looking ADLS secrets: the key must never show anywhere, even on failure.
    scope = "diabetes-spark"
    monkeypatch.setenv(secret_env_name(scope, "adls-account-name"), "devaccount")
    monkeypatch.setenv(secret_env_name(scope, "adls-container-name"), "lake")
    monkeypatch.setenv(secret_env_name(scope, "adls-account-key"), SENTINEL_KEY)
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(demo["home"]))
    caplog.set_level(logging.INFO)
    bad = tmp_path / "bad.csv"
    bad.write_text("AGE,SEX,Y\n50,M,100\n")
    widgets = {
        "training_data": str(bad),
        "experiment": "notebook-failures",
        "databricks_job_id": "17",
        "databricks_run_id": "4242",
    }
    with pytest.raises(NotebookError) as info:
        run_notebook(NB / NOTEBOOKS["train"], spark=spark, widgets=widgets)
    message = str(info.value)
    assert "diabetes_orchestrator_train.py cell" in message and "SchemaError" in message
    assert "missing required column(s) ['BMI'" in message
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("notebook-failures").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert {k: runs[0].data.tags.get(k) for k in ("databricks_job_id", "databricks_run_id")} == {
        "databricks_job_id": "17",
        "databricks_run_id": "4242",
    }  # a run (and so each row's mlflow_run_id) leads to the Databricks job run
    assert spark.conf.get("fs.azure.account.key.devaccount.dfs.core.windows.net") == SENTINEL_KEY

    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "abfss://lake@devaccount.dfs.core.windows.net/" in logged  # the resolved root is logged...
    for text in (out, err, logged, message):
        assert SENTINEL_KEY not in text  # ...the key never is
    spark.conf.unset("fs.azure.account.key.devaccount.dfs.core.windows.net")


def test_missing_required_secret_is_a_clear_error(spark, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secret_env_name("diabetes-spark", "adls-account-name"), raising=False)
    with pytest.raises(
        NotebookError, match=r"secret 'adls-account-name' is missing from secret scope 'diabetes-spark'"
    ):
        run_notebook(NB / NOTEBOOKS["score"], spark=spark, widgets={"input": "x", "output": "y"})


def test_cli_notebook_reports_the_failing_cell(spark, tmp_path: Path, capsys) -> None:
    notebook = tmp_path / "nb.py"
    notebook.write_text(
        "# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\n# MAGIC %pip install nothing\n\n"
        "# COMMAND ----------\n\nraise RuntimeError('boom')\n"
    )
    assert cli.main(["notebook", str(notebook)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nb.py cell 3 (line 10) failed: RuntimeError: boom" in err
    exit_nb = tmp_path / "exit.py"
    exit_nb.write_text(
        '# Databricks notebook source\ndbutils.widgets.text("n", "1")\n\n# COMMAND ----------\n\n'
        'import json\ndbutils.notebook.exit(json.dumps({"n": int(dbutils.widgets.get("n")) * 2}))\n'
    )
    assert cli.main(["notebook", str(exit_nb), "--widget", "n=21", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 42}


@pytest.mark.slow
def test_training_notebook_runs_against_the_installed_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    """The way a Job would: the wheel installed in a clean virtualenv, no access to the source tree."""
    notebook = tmp_path / "nb" / NOTEBOOKS["train"]
    notebook.parent.mkdir()
    notebook.write_text((NB / NOTEBOOKS["train"]).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DIABETES_SPARK_", "PYTHONPATH"))}
    env.update(
        {
            "DIABETES_SPARK_MASTER": "local[1]",
            "DIABETES_SPARK_HOME": str(tmp_path / "home"),
            "DIABETES_SPARK_JVM_CACHE": "off",
        }
    )
    result = subprocess.run(
        [
            str(wheel_venv / "bin" / "diabetes-spark"),
            "notebook",
            str(notebook),
            "--json",
            "--widget",
            "training_data=sample:diabetes.csv",
            "--widget",
            "storage_account_secret=",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["model_version"], summary["promoted"], summary["rows_in"]) == ("1", True, 442)
    # MLflow's own INFO lines (a new store's tables, the registration) stay out unless asked for.
    mlflow_info = ("Creating initial MLflow database tables", "Successfully registered model", "Created version")
    shown = [line for line in result.stderr.splitlines() if any(info in line for info in mlflow_info)]
    assert not shown, result.stderr[-3000:]
    assert (tmp_path / "home" / "mlflow.db").is_file()
