"""Secrets never leave the secret store: sentinel values planted in the local secret scope are
absent from everything the notebooks produce, on success and on failure.

The notebooks run in a fresh process (as a Databricks job would), through the CLI, with Python
logging at DEBUG, Spark's driver log at INFO and the Spark event log on, telemetry going to a
stand-in ingestion endpoint. Then every byte they left is searched for the sentinel, its
URL-encoded and its base64 forms.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from diabetes_spark.local_dbutils import secret_env_name
from diabetes_spark.notebook import NOTEBOOKS
from tests.collector import Collector

ROOT = Path(__file__).resolve().parent.parent
SCOPE = "diabetes-spark"
ACCOUNT = "sentinelacct"
#: Looks like an ADLS key (base64 with '+', '/' and '='), so its URL-encoded form differs.
SENTINEL = f"Zq9+Sentinel/AdlsKey{uuid.uuid4().hex[:12]}+x=="
FORMS = {
    "plain": SENTINEL,
    "url-encoded": quote(SENTINEL, safe=""),
    "base64": base64.b64encode(SENTINEL.encode()).decode().rstrip("="),
}

#: One process, one Spark session, the three notebook runs through the console script's entry point.
RUNNER = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from diabetes_spark import cli
from diabetes_spark.session import get_spark
events = sys.argv[1]
spark = get_spark("secrets", master="local[2]", conf={
    "spark.sql.shuffle.partitions": "2",
    "spark.eventLog.enabled": "true",
    "spark.eventLog.dir": events,
    "spark.eventLog.compress": "false",
})
spark.sparkContext.setLogLevel("INFO")
codes = [cli.main(args) for args in json.loads(sys.argv[2])]
print("exit codes: " + json.dumps(codes), flush=True)
spark.stop()
"""


def _found(text: str) -> list[str]:
    return [name for name, form in FORMS.items() if form in text]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


#: Storage routes whose secret is the sentinel: widgets naming the secrets, the secrets, the conf key that carries it.
ROUTES = {
    "account_key": ([], {"adls-account-key": SENTINEL}, f"fs.azure.account.key.{ACCOUNT}.dfs.core.windows.net"),
    "oauth": (
        [
            "storage_client_id_secret=adls-client-id",
            "storage_client_secret_secret=adls-client-secret",
            "storage_tenant_id_secret=adls-tenant-id",
        ],
        {"adls-client-id": "0f0e0d0c-client-id", "adls-client-secret": SENTINEL, "adls-tenant-id": "tenant-guid"},
        f"fs.azure.account.oauth2.client.secret.{ACCOUNT}.dfs.core.windows.net",
    ),
}


@pytest.fixture(scope="module", params=sorted(ROUTES))
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    widgets, planted, conf_key = ROUTES[request.param]
    home = tmp_path_factory.mktemp(f"secrets-home-{request.param}")
    events = home / "spark-events"
    events.mkdir()
    bad = home / "bad_batch.csv"
    bad.write_text("AGE,SEX,Y\n50,M,100\n")
    notebooks = ROOT / "notebooks"
    train = ["notebook", str(notebooks / NOTEBOOKS["train"]), "--widget", "training_data=sample:diabetes.csv"]
    score = ["notebook", str(notebooks / NOTEBOOKS["score"]), "--widget", "input=sample:scoring_batch.csv"]
    score += ["--widget", f"output={home / 'predictions'}"]
    failing = ["notebook", str(notebooks / NOTEBOOKS["score"]), "--widget", f"input={bad}"]
    failing += ["--widget", f"output={home / 'predictions'}"]
    train, score, failing = ([*run, *(a for w in widgets for a in ("--widget", w))] for run in (train, score, failing))
    with Collector() as collector:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "APPLICATIONINSIGHTS_"))}
        env.update(
            {
                "DIABETES_SPARK_HOME": str(home),
                secret_env_name(SCOPE, "adls-account-name"): ACCOUNT,
                secret_env_name(SCOPE, "adls-container-name"): "lake",
                **{secret_env_name(SCOPE, key): value for key, value in planted.items()},
                secret_env_name(SCOPE, "appinsights-connection-string"): collector.connection_string(),
                "PYTHONPATH": str(ROOT),
            }
        )
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(events), json.dumps([train, score, failing])],
            capture_output=True,
            text=True,
            env=env,
            cwd=home,
            timeout=600,
        )
        assert collector.wait_for(lambda: len(collector.of_type("Request")) >= 3)
        bodies = list(collector.bodies)
        envelopes = list(collector.envelopes)
    return {
        "home": home,
        "events": events,
        "done": done,
        "bodies": bodies,
        "envelopes": envelopes,
        "conf_key": conf_key,
    }


@pytest.mark.slow
def test_the_runs_really_used_the_secret_and_one_failed(runs: dict) -> None:
    done = runs["done"]
    assert "exit codes: [0, 0, 2]" in done.stdout, done.stderr[-3000:]
    assert "SchemaError" in done.stderr and "missing required column" in done.stderr
    # The key reached Spark (its conf is in the event log, redacted) and telemetry ran for all three.
    events = "\n".join(p.read_text(errors="replace") for p in _files(runs["events"]))
    assert runs["conf_key"] in events
    assert "*********(redacted)" in events
    names = {e["data"]["baseData"].get("name") for e in runs["envelopes"] if e["name"].endswith(".Request")}
    assert names == {"Train_Orchestrator", "Batch_Score_Orchestrator"}
    assert any(e["name"].endswith(".Exception") for e in runs["envelopes"])


@pytest.mark.slow
def test_no_sentinel_in_stdout_stderr_or_driver_logs(runs: dict) -> None:
    done = runs["done"]
    assert re.search(r"INFO (SparkContext|DAGScheduler)", done.stderr)  # Spark's driver log is in there
    assert (_found(done.stdout), _found(done.stderr)) == ([], [])


@pytest.mark.slow
def test_no_sentinel_in_telemetry_envelopes(runs: dict) -> None:
    assert runs["bodies"] and [_found(body) for body in runs["bodies"] if _found(body)] == []


@pytest.mark.slow
def test_no_sentinel_in_mlflow_tables_logs_or_any_file_left_behind(runs: dict) -> None:
    home: Path = runs["home"]
    files = _files(home)
    assert home / "mlflow.db" in files and any("mlartifacts" in p.parts for p in files)
    assert any(p.name.endswith(".parquet") for p in files) and any("spark-events" in p.parts for p in files)
    leaks = {str(p.relative_to(home)): _found(p.read_bytes().decode("latin-1")) for p in files}
    assert {p: f for p, f in leaks.items() if f} == {}


@pytest.mark.slow
def test_no_sentinel_in_mlflow_params_tags_or_metrics(runs: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs['home'] / 'mlflow.db'}")
    runs_found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs_found) == 3
    text = json.dumps([{"params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics} for r in runs_found])
    assert _found(text) == []
