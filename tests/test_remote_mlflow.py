"""Against a real MLflow tracking server: training in one working directory, scoring from another
after the first is gone (CLI and notebook), nothing of MLflow's on the client's disk."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from mlflow.tracking import MlflowClient

from diabetes_spark import cli, registry, schemas, scoring, spark_models, storage
from diabetes_spark.notebook import NOTEBOOKS, run_notebook
from diabetes_spark.registry import MlflowLocation
from tests.mlflow_server import mlflow_server

pytestmark = pytest.mark.slow

NB = Path(__file__).resolve().parent.parent / "notebooks"
MODEL, TRAIN_EXPERIMENT, SCORE_EXPERIMENT = "remote_model", "remote-training", "remote-scoring"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture(scope="module")
def loop(spark, server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train from one working directory; delete it; score from another through the CLI and the notebook."""
    base = tmp_path_factory.mktemp("remote")
    first, second = base / "first", base / "second"
    first.mkdir()
    second.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)  # the server is the registry too
        mp.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
        mp.chdir(first)
        train = _cli(
            ["train", "--training-data", "sample:diabetes.csv", "--experiment", TRAIN_EXPERIMENT, "--model-name", MODEL]
        )
        mp.chdir(second)
        shutil.rmtree(first)
        score_args = ["--output", str(second / "cli"), "--experiment", SCORE_EXPERIMENT, "--batch-id", "cli-1"]
        score = _cli(["score", "--input", "sample:scoring_batch.csv", "--model-name", MODEL, *score_args])
        widgets = {"storage_account_secret": "", "input": "sample:scoring_batch.csv", "output": str(second / "nb")}
        widgets.update({"model_name": MODEL, "experiment": SCORE_EXPERIMENT, "batch_id": "nb-1"})
        notebook = json.loads(run_notebook(NB / NOTEBOOKS["score"], spark=spark, widgets=widgets) or "{}")
    return {"train": train, "score": score, "notebook": notebook, "second": second, "server": server}


def _cli(argv: list[str]) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*argv, "--json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_scoring_elsewhere_writes_the_models_own_predictions(spark, loop: dict) -> None:
    assert (loop["train"]["model_version"], loop["train"]["promoted"]) == ("1", True)
    with MlflowLocation(tracking_uri=loop["server"], registry_uri=loop["server"]).active():
        model = spark_models.load_model(
            spark, registry.resolve_version(MODEL, alias=registry.CHAMPION)
        )  # through the server
    source = storage.read_table(spark, storage.resolve("sample:scoring_batch.csv"))
    valid = schemas.valid_rows(schemas.annotate(source, schemas.load_schema("scoring_input")))
    shape = "patient_id string, prediction double"  # one nullability for both sides
    expected = spark.createDataFrame(model.transform(valid).select("patient_id", schemas.PREDICTION).collect(), shape)
    for run, folder in ((loop["score"], "cli"), (loop["notebook"], "nb")):
        assert (run["rows_in"], run["rows_scored"], run["rows_rejected"], run["model_version"]) == (40, 38, 2, "1")
        written = storage.read_table(spark, storage.resolve(str(loop["second"] / folder)))
        got = spark.createDataFrame(written.select("patient_id", schemas.PREDICTION).collect(), shape)
        assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True)
        assert written.select(*scoring.LINEAGE_COLUMNS[:3]).distinct().count() == 1


def test_drift_is_scored_from_the_profile_the_server_keeps(loop: dict) -> None:
    client = MlflowClient(tracking_uri=loop["server"], registry_uri=loop["server"])
    for run in (loop["score"], loop["notebook"]):
        assert run["drift"] == "not judged: 38 rows scored, fewer than 100"  # the summary prints no scores then
        metrics = client.get_run(run["run_id"]).data.metrics
        psi = {name[len("psi_") :]: value for name, value in metrics.items() if name.startswith("psi_")}
        assert set(psi) == set(schemas.feature_names())
        assert all(value >= 0 for value in psi.values())


def test_aliases_and_artifacts_live_on_the_server(loop: dict) -> None:
    client = MlflowClient(tracking_uri=loop["server"], registry_uri=loop["server"])
    aliases = client.get_registered_model(MODEL).aliases
    assert aliases == {registry.CHAMPION: "1", registry.CHALLENGER: "1"}
    experiments = [client.get_experiment_by_name(name) for name in (TRAIN_EXPERIMENT, SCORE_EXPERIMENT)]
    assert [e.tags.get("mlflow.experimentKind") for e in experiments] == ["custom_model_development"] * 2
    locations = [e.artifact_location for e in experiments]
    runs = client.search_runs([e.experiment_id for e in experiments])
    locations += [r.info.artifact_uri for r in runs]
    assert len(runs) == 3 and all(not uri.startswith("file:") for uri in locations), locations
    assert {r.data.tags.get("job") for r in runs} == {"train", "batch_score"}
