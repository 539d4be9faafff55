"""Telemetry through the real exporters of each backend (OpenCensus and OpenTelemetry's Azure
Monitor exporters) to an ingestion endpoint on 127.0.0.1: the contract both keep.

The endpoint (:mod:`tests.collector`) records every envelope the exporters post, so the tests
assert on exactly what Application Insights would receive: messages and exceptions with their
custom dimensions, one request per run and one dependency per step under one operation id, and
metrics with the row counts; and that a failing endpoint costs neither the job nor more than
``flush_timeout``. Configuration and what differs between the backends: test_telemetry_backends.py.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from diabetes_spark import __version__, cli, jobs, telemetry
from diabetes_spark.errors import SchemaError
from diabetes_spark.params import ScoreParams, TrainParams
from tests.collector import Collector

ENV = telemetry.ENV_CONNECTION_STRING
MODEL, EXPERIMENT = "telemetry_model", "telemetry-tests"
KEY = "4a5b6c7d-1e2f-4a3b-8c9d-0e1f2a3b4c5d"
#: A storage-key-like secret: base64 alphabet with '+', '/' and '=' so its URL-encoded form differs.
SECRET = "Sup3r+S3cret/AccountKey=="
#: Where the local secret store (``LocalDbutils``) keeps scope ``diabetes-spark``, key ``adls-account-key``.
LOCAL_SECRET = "DIABETES_SPARK_SECRET__DIABETES_SPARK__ADLS_ACCOUNT_KEY"
SECRET_FORMS = (SECRET, quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode().rstrip("="))
BACKENDS = telemetry.BACKENDS
EXPORTER_THREADS = (
    "telemetry-close",  # the session's own, which stops the SDK's
    *("LogHandler Worker", "AzureExporter Worker"),  # opencensus
    *("OtelBatchLogRecordProcessor", "OtelBatchSpanRecordProcessor", "OtelPeriodicExportingMetricReader"),
)
TRAIN_STEPS = {"read", "validate", "fit", "evaluate", "register"}
SCORE_STEPS = {"load_model", "read", "validate", "score", "write"}


# -- helpers -----------------------------------------------------------------------------------


def _kind(envelope: dict[str, Any]) -> str:
    return envelope["name"].rsplit(".", 1)[-1]


def _base(envelope: dict[str, Any]) -> dict[str, Any]:
    return envelope["data"]["baseData"]


def _props(envelope: dict[str, Any]) -> dict[str, Any]:
    return _base(envelope).get("properties", {})


def _op(envelope: dict[str, Any]) -> str:
    return envelope["tags"].get("ai.operation.id", "")


def _run(collector: Collector, **dimensions: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The one request whose properties match ``dimensions``, and every envelope of its operation.

    OpenTelemetry's metrics carry no operation id (no trace context): a run's are those with its dimensions.
    """
    (request,) = [r for r in collector.of_type("Request") if all(_props(r).get(k) == v for k, v in dimensions.items())]
    return request, [
        e
        for e in collector.envelopes
        if _op(e) == _op(request)
        or (not _op(e) and _kind(e) == "Metric" and all(_props(e).get(k) == v for k, v in dimensions.items()))
    ]


def _of(envelopes: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in envelopes if _kind(e) == kind]


def _metrics(envelopes: list[dict[str, Any]]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Metric name -> [(value, properties)]."""
    found: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for e in _of(envelopes, "Metric"):
        point = _base(e)["metrics"][0]
        found.setdefault(point["name"], []).append((point["value"], _props(e)))
    return found


def _stack(details: dict[str, Any]) -> str:
    """An exception's stack as text: OpenCensus parses it into frames, OpenTelemetry sends it whole."""
    frames = details.get("parsedStack") or []
    return "\n".join(f"{f['fileName']}:{f['line']} in {f['method']}" for f in frames) or details.get("stack", "")


def _exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in EXPORTER_THREADS and t.is_alive()]


def _score_params(tmp_path: Path, batch_id: str) -> ScoreParams:
    return ScoreParams(
        input="sample:scoring_batch.csv",
        output=str(tmp_path / "p"),
        model_name=MODEL,
        experiment=EXPERIMENT,
        batch_id=batch_id,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "diabetes_spark.telemetry" and r.levelno == logging.WARNING
    ]


def _sdk_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    sdk = ("opencensus", "opentelemetry", "azure")
    return [r.getMessage() for r in caplog.records if r.name.startswith(sdk) and r.levelno >= logging.WARNING]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend in turn, chosen as a job would be: through the environment."""
    monkeypatch.setenv(telemetry.ENV_BACKEND, request.param)
    return request.param


# -- delivery, correlation, redaction (no Spark) ------------------------------------------------


def test_records_are_correlated_redacted_and_sent_once(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector() as collector:
        # A trailing ';' and a bare key in the environment would make the SDK's own parser fail.
        monkeypatch.setenv(ENV, collector.connection_string(KEY) + ";")
        tel = telemetry.start(telemetry.COMPONENT_SCORE, secrets=[SECRET], dimensions={"databricks_run_id": "77"})
        tel.set_dimensions(batch_id="b-1", model_version=f"key={SECRET}")
        with tel.span("configure", account_key=SECRET) as log:
            log.info("raw %s, url %s, base64 %s", *SECRET_FORMS)
        tel.record({"rows_in": 40, "rows_rejected": 2, "nan": float("nan"), "text": "x"})  # type: ignore[dict-item]
        error = RuntimeError(f"cannot use key {SECRET}")
        with pytest.raises(RuntimeError), tel.span("write"):
            raise error
        tel.logger().exception("batch scoring failed: %s", error, exc_info=error)  # as a notebook does
        tel.close()
        tel.close()  # a second close does nothing

        request, run = _run(collector, batch_id="b-1")
        assert (_base(request)["success"], _base(request)["name"]) == (False, "Batch_Score_Orchestrator")
        assert {_op(e) for e in collector.envelopes if _kind(e) != "Metric"} == {tel.trace_id}
        assert {e["tags"]["ai.cloud.role"] for e in collector.envelopes} == {"Batch_Score_Orchestrator"}
        dependencies = {_base(d)["name"]: d for d in _of(run, "RemoteDependency")}
        outcomes = {n: (_base(d)["success"], _base(d)["type"]) for n, d in dependencies.items()}
        assert outcomes == {"configure": (True, "InProc"), "write": (False, "InProc")}
        assert {d["tags"]["ai.operation.parentId"] for d in dependencies.values()} == {_base(request)["id"]}
        (message,) = [m for m in _of(run, "Message") if _base(m)["message"].startswith("raw ")]
        assert _base(message)["message"] == "raw [REDACTED], url [REDACTED], base64 [REDACTED]"
        assert message["tags"]["ai.operation.parentId"] == _base(dependencies["configure"])["id"]
        expected = {
            "step": "configure",
            "batch_id": "b-1",
            "model_version": "key=[REDACTED]",
            "databricks_run_id": "77",
            "diabetes_spark_version": __version__,
        }
        assert {k: _props(message)[k] for k in expected} == expected
        assert _props(dependencies["configure"])["account_key"] == "[REDACTED]"
        # The exception is sent once, from the step, with its stack; the notebook's re-log keeps its message only.
        (exception,) = _of(run, "Exception")
        details = _base(exception)["exceptions"][0]
        assert details["typeName"] == "RuntimeError" and details["hasFullStack"]
        assert "test_records_are_correlated_redacted_and_sent_once" in _stack(details)
        assert "cannot use key [REDACTED]" in details["message"] and _props(exception)["step"] == "write"
        assert exception["tags"]["ai.operation.parentId"] == _base(dependencies["write"])["id"]
        failures = [_base(m)["message"] for m in _of(run, "Message") if "failed" in _base(m)["message"]]
        assert failures == ["batch scoring failed: cannot use key [REDACTED]"]
        metrics = _metrics(run)
        rows = {k: [v for v, _ in vs] for k, vs in metrics.items() if k.startswith("rows")}
        assert rows == {"rows_in": [40.0], "rows_rejected": [2.0]}
        assert {p["step"] for _, p in metrics[telemetry.STEP_DURATION_METRIC]} == {"configure", "write"}
        assert "nan" not in metrics and "text" not in metrics
        assert not [f for f in SECRET_FORMS for body in collector.bodies if f in body]
        assert KEY in collector.bodies[0]  # the key itself must stay readable for ingestion


def test_two_sessions_in_one_process_each_reach_their_endpoint_and_stop(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):  # the SDK's construction-order pitfalls would show on the second session
        with Collector() as collector:
            with telemetry.start(telemetry.COMPONENT_TRAIN, connection_string=collector.connection_string()) as tel:
                tel.logger("read").info("hello")
            messages = [(_base(m)["message"], _props(m)["step"]) for m in collector.of_type("Message")]
            assert messages == [("hello", "read")]
            assert {_op(e) for e in collector.envelopes if _kind(e) != "Metric"} == {tel.trace_id}
            assert len(collector.of_type("Request")) == 1 and collector.of_type("Metric")
    deadline = time.monotonic() + 5
    while _exporter_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _exporter_threads() == []
    assert _sdk_warnings(caplog) == [] and _lost_warnings(caplog) == []


def test_a_slow_endpoint_costs_at_most_the_flush_timeout(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    with Collector("delay", delay=6.0) as collector:
        tel = telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=collector.connection_string(), flush_timeout=1.0
        )
        with tel.span("score") as log:
            log.info("scored")
        tel.record({"rows_scored": 38})
        began = time.monotonic()
        tel.close()
        took = time.monotonic() - began
    assert took < 1.0 + 1.0, f"close took {took:.2f} s"
    (warning,) = _lost_warnings(caplog)
    assert "records were lost" in warning and "the flush did not finish within 1 s" in warning
    assert f"http://127.0.0.1:{collector.port}" in warning
    assert _sdk_warnings(caplog) == []


def test_overlapping_sessions_of_one_component_leave_its_logger_as_they_found_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    logger = logging.getLogger(telemetry.COMPONENT_TRAIN)
    before = (logger.level, logger.propagate, list(logger.handlers))
    first = telemetry.start(telemetry.COMPONENT_TRAIN, connection_string=None)
    second = telemetry.start(telemetry.COMPONENT_TRAIN, connection_string=None)
    first.close()  # closed out of order: the second is still running
    second.logger().info("second still logs")
    second.close()
    logger.info("after both")
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    assert {"second still logs", "after both"} <= {r.getMessage() for r in caplog.records}


QUICK_RECORDS = 20_000


def _emit_quickly(tel: telemetry.Telemetry) -> None:
    with tel.span("score") as log:
        for i in range(QUICK_RECORDS):
            log.info("row %d scored", i)
    tel.record({"rows_scored": QUICK_RECORDS})


def test_twenty_thousand_quick_records_to_a_black_hole_cost_at_most_the_flush_timeout(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A black hole: the port accepts connections (kernel backlog) but nothing ever reads or answers.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(1)
        connection = f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:{hole.getsockname()[1]}/"
        tel = telemetry.start(telemetry.COMPONENT_SCORE, connection_string=connection, flush_timeout=2.0)
        _emit_quickly(tel)
        began = time.monotonic()
        tel.close()
        took = time.monotonic() - began
    assert took < 2.0 + 1.0, f"close took {took:.2f} s"
    (warning,) = _lost_warnings(caplog)
    assert "records were lost" in warning and "the flush did not finish within 2 s" in warning
    # Past the deadline nothing more is sent: the workers end with the request in flight (its timeout
    # is the flush timeout), not after one per batch left; and not one SDK line per batch, even then.
    end = time.monotonic() + 2.0 + 3.0
    while _exporter_threads() and time.monotonic() < end:
        time.sleep(0.1)
    assert _exporter_threads() == []
    assert _sdk_warnings(caplog) == [] and len(_lost_warnings(caplog)) == 1


def test_twenty_thousand_quick_records_all_reach_a_healthy_endpoint(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Collector() as collector:
        tel = telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=collector.connection_string(), flush_timeout=60.0
        )
        _emit_quickly(tel)
        tel.close()
        messages = [_base(m)["message"] for m in collector.of_type("Message")]
    assert sorted(m for m in messages if m.startswith("row ")) == sorted(
        f"row {i} scored" for i in range(QUICK_RECORDS)
    )
    assert _lost_warnings(caplog) == [] and _sdk_warnings(caplog) == []


# -- real jobs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job_runs(spark, mlflow_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Per backend, a real training run then a scoring run, each job starting its telemetry from the
    environment and closing it itself, to a collector of that backend's own."""
    with Collector() as first, Collector() as second:
        runs = {}
        for name, collector in zip(BACKENDS, (first, second)):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(ENV, collector.connection_string(KEY))
                mp.setenv(telemetry.ENV_BACKEND, name)
                params = TrainParams(training_data="sample:diabetes.csv", experiment=EXPERIMENT, model_name=MODEL)
                training = jobs.run_training(spark, params, home=mlflow_home)
                output = tmp_path_factory.mktemp(f"scored-{name}")
                scoring = jobs.run_batch_scoring(spark, _score_params(output, f"e2e-{name}"), home=mlflow_home)
            runs[name] = {"collector": collector, "training": training, "scoring": scoring}
        yield runs


@pytest.fixture
def collector(backend: str, job_runs: dict[str, dict[str, Any]]) -> Collector:
    return job_runs[backend]["collector"]


@pytest.fixture
def training_run(backend: str, job_runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return job_runs[backend]["training"]


#: Properties each SDK adds to log records by itself (the rest are the documented dimensions).
SDK_PROPERTIES = {
    *("process", "module", "fileName", "lineNumber", "level"),  # opencensus
    *("code.file.path", "code.function.name", "code.line.number", "logger_name"),  # opentelemetry
}


def _only(these: Any, those: Any) -> Any:
    if isinstance(these, dict):
        return {k: _only(v, those.get(k, [])) for k, v in these.items() if _only(v, those.get(k, []))}
    return sorted(set(map(str, these)) - set(map(str, those)))


@pytest.mark.slow
def test_both_backends_deliver_the_same_kinds_of_records(job_runs: dict[str, dict[str, Any]]) -> None:
    seen, counts = {}, {}
    for name, run in job_runs.items():
        envelopes = run["collector"].envelopes
        kinds = sorted({e["data"]["baseType"] for e in envelopes})
        dimensions = {
            kind: sorted({k for e in _of(envelopes, kind) for k in _props(e)} - SDK_PROPERTIES)
            for kind in ("Message", "Request", "RemoteDependency", "Metric")
        }
        steps = sorted({(e["tags"]["ai.cloud.role"], _base(e)["name"]) for e in _of(envelopes, "RemoteDependency")})
        metrics = sorted(_metrics(envelopes))
        seen[name] = {"kinds": kinds, "dimensions": dimensions, "steps": steps, "metrics": metrics}
        counts[name] = {
            kind: len(_of(envelopes, kind)) for kind in ("Message", "Request", "RemoteDependency", "Metric")
        }
    for part in seen["opencensus"]:
        oc, ot = seen["opencensus"][part], seen["opentelemetry"][part]
        assert ot == oc, f"{part}: only opencensus {_only(oc, ot)}, only opentelemetry {_only(ot, oc)}"
    assert seen["opencensus"]["kinds"] == ["MessageData", "MetricData", "RemoteDependencyData", "RequestData"]
    assert {s for _, s in seen["opencensus"]["steps"]} == TRAIN_STEPS | SCORE_STEPS
    # Each metric is recorded once per name and dimensions in these runs: one envelope each, either way.
    assert counts["opentelemetry"] == counts["opencensus"], counts


@pytest.mark.slow
def test_training_run_sends_steps_logs_and_metrics_under_one_operation(
    training_run: dict[str, Any], collector: Collector
) -> None:
    # No waiting: the job flushed before it returned.
    request, run = _run(collector, mlflow_run_id=training_run["run_id"])
    assert _base(request)["success"] is True
    assert {e["tags"]["ai.cloud.role"] for e in run} == {"Train_Orchestrator"}
    dependencies = {_base(d)["name"]: d for d in _of(run, "RemoteDependency")}
    assert set(dependencies) == TRAIN_STEPS and all(_base(d)["success"] for d in dependencies.values())
    span_ids = {_base(d)["id"]: n for n, d in dependencies.items()}
    common = {
        "mlflow_run_id": training_run["run_id"],
        "mlflow_experiment_id": training_run["experiment_id"],
        "model_name": MODEL,
        "diabetes_spark_version": __version__,
    }
    messages = _of(run, "Message")
    assert {_props(m)["step"] for m in messages} == TRAIN_STEPS
    for message in messages:
        assert {k: _props(message).get(k) for k in common} == common
        assert span_ids[message["tags"]["ai.operation.parentId"]] == _props(message)["step"]  # logs carry their span
    (decision,) = [m for m in messages if _base(m)["message"].startswith(f"model {MODEL} v")]
    assert _props(decision)["model_version"] == training_run["model_version"]
    metrics = _metrics(run)
    assert [(v, p["mlflow_run_id"]) for v, p in metrics["rows_in"]] == [(442.0, training_run["run_id"])]
    assert [v for v, _ in metrics["rows_rejected"]] == [5.0]
    assert [v for v, _ in metrics["rmse"]] == [pytest.approx(training_run["metrics"]["rmse"])]
    assert {p["step"] for _, p in metrics[telemetry.STEP_DURATION_METRIC]} == TRAIN_STEPS
    assert not _of(run, "Exception")


@pytest.mark.slow
def test_failing_training_run_sends_the_exception_with_its_stack(
    spark,
    mlflow_home: Path,
    collector: Collector,
    training_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "cols.csv").write_text("AGE,SEX,Y\n1,M,2\n")
    monkeypatch.setenv(ENV, collector.connection_string(KEY))
    params = TrainParams(training_data=str(tmp_path / "cols.csv"), experiment=EXPERIMENT, model_name=MODEL)
    with pytest.raises(SchemaError):
        jobs.run_training(spark, params, home=mlflow_home)
    requests = [r for r in collector.of_type("Request") if _base(r)["success"] is False]
    (request,) = [r for r in requests if _props(r)["mlflow_experiment_id"] == training_run["experiment_id"]]
    run = [e for e in collector.envelopes if _op(e) == _op(request)]
    steps = [(_base(d)["name"], _base(d)["success"]) for d in _of(run, "RemoteDependency")]
    assert steps == [("read", False)]
    (exception,) = _of(run, "Exception")
    details = _base(exception)["exceptions"][0]
    assert details["typeName"] == "SchemaError" and details["hasFullStack"]
    assert "missing required column" in details["message"]
    assert "read_annotated" in _stack(details)
    assert (
        _props(exception)["step"] == "read" and _props(exception)["mlflow_run_id"] == _props(request)["mlflow_run_id"]
    )


@pytest.mark.slow
def test_scoring_run_owned_by_a_notebook_sends_batch_dimensions_and_no_secret(
    spark,
    mlflow_home: Path,
    collector: Collector,
    training_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a notebook does: a secret from the (local) secret scope, job ids from the Databricks job.
    monkeypatch.setenv(LOCAL_SECRET, SECRET)
    storage_key = os.environ[LOCAL_SECRET]
    tel = telemetry.start(
        telemetry.COMPONENT_SCORE,
        connection_string=collector.connection_string(KEY),
        secrets=[storage_key],
        dimensions={"databricks_job_id": "1001", "databricks_run_id": "2002"},
    )
    tel.logger().info("configured storage with key %s", storage_key)
    summary = jobs.run_batch_scoring(spark, _score_params(tmp_path, "tel-1"), home=mlflow_home, telemetry=tel)
    assert all(_props(r).get("batch_id") != "tel-1" for r in collector.of_type("Request"))  # still open
    tel.close()  # the caller owns it

    request, run = _run(collector, batch_id="tel-1")
    assert _base(request)["success"] is True
    assert {e["tags"]["ai.cloud.role"] for e in run} == {"Batch_Score_Orchestrator"}
    assert {_base(d)["name"] for d in _of(run, "RemoteDependency")} == SCORE_STEPS
    expected = {
        "batch_id": "tel-1",
        "model_name": MODEL,
        "model_version": summary["model_version"],
        "mlflow_run_id": summary["run_id"],
        "databricks_job_id": "1001",
        "databricks_run_id": "2002",
        "diabetes_spark_version": __version__,
    }
    step_messages = [m for m in _of(run, "Message") if _props(m).get("step") in ("score", "write")]
    assert step_messages and all({k: _props(m).get(k) for k in expected} == expected for m in step_messages)
    metrics = _metrics(run)
    rows = {k: [v for v, _ in metrics[k]] for k in ("rows_in", "rows_scored", "rows_rejected")}
    assert rows == {"rows_in": [40.0], "rows_scored": [38.0], "rows_rejected": [2.0]}
    assert {k: v for k, v in metrics["rows_rejected"][0][1].items() if k in expected} == expected  # per batch
    planted = [_base(m)["message"] for m in _of(run, "Message") if "storage" in _base(m)["message"]]
    assert planted == ["configured storage with key [REDACTED]"]
    assert not [f for f in SECRET_FORMS for body in collector.bodies if f in body]


@pytest.mark.slow
def test_scoring_survives_an_endpoint_answering_500_within_the_flush_timeout(
    spark, mlflow_home: Path, training_run: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Collector("fail") as failing:
        tel = telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=failing.connection_string(KEY), flush_timeout=2.0
        )
        summary = jobs.run_batch_scoring(spark, _score_params(tmp_path, "tel-500"), home=mlflow_home, telemetry=tel)
        began = time.monotonic()
        tel.close()
        took = time.monotonic() - began
    assert (summary["rows_scored"], summary["rows_rejected"]) == (38, 2)
    assert took < 2.0 + 1.0, f"close took {took:.2f} s"
    assert failing.attempts >= 1 and failing.envelopes == []
    (warning,) = _lost_warnings(caplog)
    assert "records were lost" in warning and "500" in warning
    assert _sdk_warnings(caplog) == []


@pytest.mark.slow
def test_cli_score_exits_0_when_the_endpoint_is_not_listening(
    spark,
    mlflow_home: Path,
    training_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV, f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:{_free_port()}/")
    monkeypatch.setenv("DIABETES_SPARK_HOME", str(mlflow_home))
    args = ["score", "--input", "sample:scoring_batch.csv", "--output", str(tmp_path / "p"), "--model-name", MODEL]
    args += ["--experiment", EXPERIMENT, "--json"]
    assert cli.main(args) == 0
    assert '"rows_scored": 38' in capsys.readouterr().out
    (warning,) = _lost_warnings(caplog)
    assert "records were lost" in warning and "Connection refused" in warning
    assert _sdk_warnings(caplog) == []
