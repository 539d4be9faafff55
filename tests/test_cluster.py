"""The jobs on a real Spark cluster (standalone master, two workers), and secrets redacted there.

Local mode runs every task inside the driver, so it hides driver-only assumptions: a path only the
driver can read, an object that cannot be serialised, jars the executors never receive. These tests
start a standalone master and two one-core workers on 127.0.0.1 from the installed pyspark, run
ingest, training (linear and random forest) and batch scoring against ``spark://`` in a separate
driver process (``tests/cluster_job.py``), and compare the results with the same steps run locally.

The cluster run also carries an ADLS account key, a SAS token and connection strings in its
configuration, with the event log and the UI on, so the tests can check that Spark's redaction
(``spark.redaction.regex`` from :mod:`diabetes_spark.redaction`) hides each of them everywhere a
user could look: the event log (what the History Server shows), the UI's environment page, and
the driver, daemon and executor logs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import diabetes_spark
from diabetes_spark import adls, storage
from tests.cluster_job import MODELS, run_pipeline
from tests.standalone import StandaloneCluster, cluster_env, free_port, signal_group

#: Slow; and the first test also waits for the cluster run in its set-up, on a possibly busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

#: What Spark writes in place of a redacted value (``Utils.REDACTION_REPLACEMENT_TEXT``).
REDACTED = "*********(redacted)"
ACCOUNT = "clusteracct"
RUNTIME_ACCOUNT = "runtimeacct"
#: Lineage that legitimately differs between two runs: when, and which MLflow run and version.
RUN_SPECIFIC = ("scored_at", "mlflow_run_id", "model_version")
#: Seconds the cluster job may take: minutes more than it needs on a busy 2-core machine.
JOB_TIMEOUT = 900


@dataclass(frozen=True)
class ClusterRun:
    """What the cluster run left behind (collected before the cluster was stopped), and the local run."""

    cluster: StandaloneCluster
    out: Path
    result: dict[str, Any]
    secrets: dict[str, str]
    stdout: str
    stderr: str
    master_state: dict[str, Any]
    local_out: Path
    local: dict[str, Any]

    @property
    def app_id(self) -> str:
        return self.result["application_id"]

    def event_log_files(self) -> list[Path]:
        """Every file of the application's event log (Spark 4 writes a rolling log folder)."""
        return sorted(p for p in (self.out / "events").rglob("*") if p.is_file())

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for f in self.event_log_files() if f.name.startswith("events_") for line in f.open()]

    def executor_dirs(self) -> list[Path]:
        """The work dir of each executor the application had: ``<worker>/<app id>/<executor id>``."""
        return sorted(
            d for i in range(self.cluster.workers) for d in (self.cluster.work_dir(i) / self.app_id).glob("*")
        )


def _secrets() -> dict[str, str]:
    """Fresh sentinel secrets: unique, so finding one anywhere can only mean it leaked."""

    def sentinel(kind: str) -> str:
        return f"{kind}{uuid.uuid4().hex}"

    return {
        "account_key": sentinel("AccountKeySentinel"),
        "runtime_key": sentinel("RuntimeKeySentinel"),
        "sas_token": f"sv=2024-11-04&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={sentinel('SasSentinel')}",
        "connection_string": (
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};"
            f"AccountKey={sentinel('ConnectionSentinel')};EndpointSuffix=core.windows.net"
        ),
        "sas_url": f"https://{ACCOUNT}.blob.core.windows.net/in/batch.csv?sv=2024-11-04&sp=r&sig={sentinel('SasUrlSentinel')}",
    }


def _job_env() -> dict[str, str]:
    """The driver's environment: this source tree first, no telemetry endpoint, no MLflow server."""
    env = cluster_env()
    source_root = str(Path(diabetes_spark.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    for name in (
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "DIABETES_SPARK_MASTER",
    ):
        env.pop(name, None)
    return env


def _what_failed(stderr: str, limit: int = 12) -> str:
    """The lines of a failed driver's log that say what went wrong, without the long JVM stack traces."""
    telling = re.compile(r"ERROR|Exception|Error\b|Caused by")
    lines = [line[:800] for line in stderr.splitlines() if telling.search(line) and not line.lstrip().startswith("at ")]
    return "\n".join(lines[:limit])


@pytest.fixture(scope="module")
def cluster_run(spark, mlflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    """Start the cluster, run ``tests/cluster_job.py`` against it, and the same steps locally meanwhile.

    The local run (the suite's ``local[2]`` session) overlaps the cluster job, which spends much of
    its time waiting on the network and the scheduler. The job and the cluster are stopped before
    any test body runs, and on every failure.
    """
    root = tmp_path_factory.mktemp("cluster-run")
    out, local_out = root / "out", tmp_path_factory.mktemp("local-run")
    out.mkdir()
    secrets = _secrets()
    cluster = StandaloneCluster(root / "cluster")
    job: subprocess.Popen | None = None
    try:
        cluster.start()
        spec = {
            "master": cluster.url,
            "out": str(out),
            "ui_port": free_port(),
            "account": ACCOUNT,
            "runtime_account": RUNTIME_ACCOUNT,
            "secrets": secrets,
        }
        spec_file = root / "spec.json"
        spec_file.write_text(json.dumps(spec))
        began = time.monotonic()
        with open(root / "driver.out", "wb") as stdout, open(root / "driver.err", "wb") as stderr:
            job = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("cluster_job.py")), str(spec_file)],
                env=_job_env(),
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        local = run_pipeline(spark, local_out, home=mlflow_home)
        local_seconds = time.monotonic() - began
        code = job.wait(timeout=JOB_TIMEOUT)
        both_seconds = time.monotonic() - began
        err = (root / "driver.err").read_text(errors="replace")
        assert code == 0, f"cluster job failed (exit {code}), driver log {root / 'driver.err'}:\n{_what_failed(err)}"
        master_state = cluster.master_state()
    finally:
        if job is not None:
            signal_group(job, signal.SIGKILL)  # a driver still running, or its JVM left behind
            job.wait()
        cluster.stop()
    result = json.loads((out / "result.json").read_text())
    print(
        f"\ncluster start-up {cluster.startup_seconds:.1f} s; pipeline on the cluster {result['pipeline_seconds']:.1f} s "
        f"and locally {local_seconds:.1f} s, overlapping: {both_seconds:.1f} s for both"
    )
    return ClusterRun(
        cluster=cluster,
        out=out,
        result=result,
        secrets=secrets,
        stdout=(root / "driver.out").read_text(errors="replace"),
        stderr=err,
        master_state=master_state,
        local_out=local_out,
        local=local,
    )


def _plain(df: DataFrame, drop: tuple[str, ...] = ()) -> DataFrame:
    """``df`` without column metadata and without the ``drop`` columns, for value comparisons."""
    return df.select(*[F.col(c).alias(c, metadata={}) for c in df.columns if c not in drop])


def _table(spark, path: Path, *, order_by: str | None = None, drop: tuple[str, ...] = ()) -> DataFrame:
    """A Delta table as plain rows in a stable order (``order_by``, else every column)."""
    df = _plain(storage.read_table(spark, storage.resolve(str(path))), drop)
    return df.orderBy(order_by or df.columns)


# -- the cluster run gives the local run's results ---------------------------------------------


def test_cluster_results_equal_the_local_run(spark, cluster_run: ClusterRun) -> None:
    local_out, local = cluster_run.local_out, cluster_run.local
    cluster = cluster_run.result["summary"]
    assert cluster_run.result["master"] == cluster_run.cluster.url
    assert [cluster["ingest"][k] for k in ("rows_in", "rows_written", "rows_rejected")] == [442, 437, 5]
    assert_df_equality(_table(spark, cluster_run.out / "raw"), _table(spark, local_out / "raw"))
    for kind in MODELS:
        for key in ("rows_in", "rows_scored", "rows_rejected", "batch_id", "unseen_sex"):
            assert cluster[f"score_{kind}"][key] == local[f"score_{kind}"][key], (kind, key)
        assert cluster[f"train_{kind}"]["metrics"] == pytest.approx(local[f"train_{kind}"]["metrics"], rel=1e-6)
        predictions = [
            _table(spark, out / f"predictions_{kind}", order_by="patient_id", drop=RUN_SPECIFIC)
            for out in (cluster_run.out, local_out)
        ]
        assert predictions[0].count() == 38
        assert_approx_df_equality(*predictions, 1e-6)
        rejects = [
            _table(spark, out / f"predictions_{kind}_rejects", order_by="record", drop=("rejected_at",))
            for out in (cluster_run.out, local_out)
        ]
        assert_df_equality(*rejects)


# -- the work really ran on the cluster's executors --------------------------------------------


def test_tasks_ran_on_both_executors_which_received_the_delta_jars(cluster_run: ClusterRun) -> None:
    events = cluster_run.events()
    executors = {e["Executor ID"] for e in events if e["Event"] == "SparkListenerExecutorAdded"}
    tasks = Counter(e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd")
    assert len(executors) == 2 and set(tasks) == executors, (executors, tasks)
    assert min(tasks.values()) >= 10, tasks  # both did real work, not one stray task each
    (app,) = [a for a in cluster_run.master_state["completedapps"] if a["id"] == cluster_run.app_id]
    assert (app["cores"], app["state"]) == (2, "FINISHED")
    # spark.jars.packages is resolved on the driver; each executor must have fetched the jars itself.
    dirs = cluster_run.executor_dirs()
    assert len(dirs) == 2
    for folder in dirs:
        fetched = {p.name for p in folder.glob("*.jar")}
        assert any(n.startswith("io.delta_delta-spark_") for n in fetched), (folder, fetched)
        assert any(n.startswith("org.apache.hadoop_hadoop-azure-") for n in fetched), (folder, fetched)


# -- secrets in the configuration are redacted wherever Spark shows configuration ---------------


def _sentinels(secrets: dict[str, str]) -> dict[str, str]:
    """The secret part of each secret value (the whole of a key, the signature of a SAS token)."""
    return {name: re.search(r"[A-Za-z]+Sentinel[0-9a-f]{32}", value).group(0) for name, value in secrets.items()}


def test_secrets_never_appear_in_event_log_ui_logs_or_outputs(cluster_run: ClusterRun) -> None:
    texts = {"driver stdout": cluster_run.stdout.encode(), "driver stderr": cluster_run.stderr.encode()}
    for root in (cluster_run.out, cluster_run.cluster.root):
        texts.update({str(p.relative_to(root.parent)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert any("events_" in name for name in texts) and any(name.endswith("stderr") for name in texts)
    leaks = [
        (secret, where)
        for secret, sentinel in _sentinels(cluster_run.secrets).items()
        for where, text in texts.items()
        if sentinel.encode() in text
    ]
    assert not leaks, f"secrets found in: {leaks}"


def test_secret_settings_are_present_and_shown_redacted(cluster_run: ClusterRun) -> None:
    """The keys are there with Spark's redaction marker: proof the secrets were set, then hidden."""
    events = cluster_run.events()
    (environment,) = [e for e in events if e["Event"] == "SparkListenerEnvironmentUpdate"]
    ui = cluster_run.result["ui_environment"]
    account_key = adls.adls_conf_key(ACCOUNT)
    sas_key = f"fs.azure.sas.fixed.token.{ACCOUNT}.dfs.core.windows.net"
    spark_settings = {
        f"spark.hadoop.{account_key}": REDACTED,
        f"spark.hadoop.{sas_key}": REDACTED,
        "spark.executorEnv.AZURE_STORAGE_CONNECTION_STRING": REDACTED,
        "spark.executorEnv.SCORING_INPUT_URL": REDACTED,
    }
    hadoop_settings = {account_key: REDACTED, sas_key: REDACTED}
    for where, spark_props, hadoop_props in (
        ("event log", environment["Spark Properties"], environment["Hadoop Properties"]),
        ("UI", dict(ui["sparkProperties"]), dict(ui["hadoopProperties"])),
    ):
        assert {k: spark_props.get(k) for k in spark_settings} == spark_settings, where
        assert {k: hadoop_props.get(k) for k in hadoop_settings} == hadoop_settings, where
    # The key the notebooks set at run time (adls.configure_adls) shows in each SQL execution's settings.
    runtime_key = adls.adls_conf_key(RUNTIME_ACCOUNT)
    shown = [
        e["modifiedConfigs"][runtime_key]
        for e in events
        if e["Event"].endswith("SQLExecutionStart") and runtime_key in e.get("modifiedConfigs", {})
    ]
    assert shown and set(shown) == {REDACTED}
