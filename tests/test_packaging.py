"""The wheel: what it carries, and that it works installed alone, away from the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from diabetes_spark import __version__
from tests.make_sample_data import main as make_sample_data

ROOT = Path(__file__).resolve().parent.parent


def test_sample_data_is_what_the_script_regenerates(tmp_path: Path) -> None:
    make_sample_data(tmp_path)
    for name in ("diabetes.csv", "scoring_batch.csv"):
        assert (tmp_path / name).read_text() == (ROOT / "diabetes_spark" / "data" / name).read_text(), name


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    assert wheel.name == f"diabetes_spark-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in ("training_raw", "scoring_input", "predictions", "rejects"):
        assert f"diabetes_spark/_schemas/{schema}.json" in names
    assert {
        "diabetes_spark/py.typed",
        "diabetes_spark/data/diabetes.csv",
        "diabetes_spark/data/scoring_batch.csv",
        "diabetes_spark/_notebooks/diabetes_orchestrator_train.py",
        "diabetes_spark/_notebooks/diabetes_orchestrator_batch_score.py",
    } <= names
    for notebook in ("diabetes_orchestrator_train.py", "diabetes_orchestrator_batch_score.py"):  # the one copy
        shipped = zipfile.ZipFile(wheel).read(f"diabetes_spark/_notebooks/{notebook}").decode()
        assert shipped == (ROOT / "notebooks" / notebook).read_text(encoding="utf-8"), notebook
    assert not any(n.startswith(("tests/", "notebooks/", "schemas/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"diabetes_spark-{__version__}.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not any("pyspark" in r and "extra" not in r for r in requires), requires
    # The OpenTelemetry stack only in its extra: the runtime's MLflow pins opentelemetry-api/sdk.
    assert not any("opentelemetry" in r and "extra" not in r for r in requires), requires
    assert any("azure-monitor-opentelemetry-exporter" in r and 'extra == "opentelemetry"' in r for r in requires)


@pytest.mark.slow
def test_installed_wheel_loads_schemas_and_ingests_the_sample(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / "bin" / "python"
    check = "from diabetes_spark import schemas; print(schemas.load_schema('rejects').fieldNames()); print(schemas.__file__)"
    out = subprocess.run([python, "-c", check], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "['record', 'reason', 'source', 'batch_id', 'rejected_at']"
    assert str(ROOT) not in out.splitlines()[1]
    result = subprocess.run(
        [
            wheel_venv / "bin" / "diabetes-spark",
            "ingest",
            "--source",
            "sample:diabetes.csv",
            "--table",
            "lake/raw",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "DIABETES_SPARK_MASTER": "local[1]"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["rows_in"], summary["rows_written"], summary["rows_rejected"]) == (442, 437, 5)
    assert (tmp_path / "lake" / "raw" / "_delta_log").is_dir()


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_from_an_empty_directory(spark, wheel_venv: Path, tmp_path: Path) -> None:
    """``cd $(mktemp -d) && diabetes-spark demo``: the notebooks come from the wheel."""
    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DIABETES_SPARK_", "PYTHONPATH"))}
    env.update({"DIABETES_SPARK_MASTER": "local[1]", "DIABETES_SPARK_JVM_CACHE": "off"})
    demo = subprocess.run(
        [wheel_venv / "bin" / "diabetes-spark", "demo", "--json"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert (summary["score"]["rows_scored"], summary["score"]["rows_rejected"]) == (38, 2)
    predictions = spark.read.format("delta").load(str(tmp_path / "lakehouse" / "diabetes_predictions"))
    assert predictions.groupBy("model_version").count().collect() == [("1", 38)]
    store = f"sqlite:///{tmp_path / 'lakehouse' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert str(client.get_model_version_by_alias("diabetes_progression", "champion").version) == "1"
