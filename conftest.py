"""Test fixtures shared by the whole suite: one Spark session (Delta on) for the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from diabetes_spark.jvm_cache import ENV_JVM_CACHE
from diabetes_spark.session import get_spark

# Tests neither record nor map the JVM class-data archive of this machine (tests/test_class_archive.py
# records its own): the suite writes nothing outside its temporary folders.
os.environ[ENV_JVM_CACHE] = "off"

#: Small settings for 2 cores: two local threads, few shuffle partitions, UI off (see session.py).
TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
    "spark.databricks.delta.snapshotPartitions": "2",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The one SparkSession of the test run."""
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = get_spark(
        "diabetes-spark-tests",
        master="local[2]",
        conf={**TEST_SPARK_CONF, "spark.sql.warehouse.dir": str(warehouse)},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The sample data shipped in the package."""
    return Path(__file__).resolve().parent / "diabetes_spark" / "data"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per test run with ``python -m build``."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("dist")
    root = Path(__file__).resolve().parent
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(root)],
        check=True,
        capture_output=True,
        cwd=root,
    )
    (built,) = out.glob("diabetes_spark-*.whl")
    return built


@pytest.fixture(scope="session")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel (not the source tree) installed, plus its ``local`` extra."""
    import subprocess
    import sys

    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[local]"],
        check=True,
        capture_output=True,
    )
    return venv


@pytest.fixture(scope="session")
def mlflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local workspace folder holding the session's MLflow SQLite store and artifacts; MLflow
    points at it for the whole run (a job pointed elsewhere points it back when it ends)."""
    from diabetes_spark.registry import MlflowLocation
    from diabetes_spark.runtime import environment

    home = tmp_path_factory.mktemp("mlflow-home")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)
    # The workspace folder of the command line run in this process too: its alias ledger is the jobs'.
    with environment({"DIABETES_SPARK_HOME": str(home)}), MlflowLocation.local(home).active():
        yield home


#: The model (and training experiment) of the :func:`trained` fixture, shared by the scoring tests.
TRAINED_MODEL, TRAINED_EXPERIMENT = "shared_model", "shared-model"


@pytest.fixture(scope="session")
def trained(spark, mlflow_home: Path) -> dict:
    """One training run on the shipped sample: version 1 of :data:`TRAINED_MODEL`, its champion.

    Tests that score with it or read it must not move its aliases."""
    from diabetes_spark import jobs
    from diabetes_spark.params import TrainParams

    params = TrainParams(training_data="sample:diabetes.csv", experiment=TRAINED_EXPERIMENT, model_name=TRAINED_MODEL)
    return jobs.run_training(spark, params, home=mlflow_home)
