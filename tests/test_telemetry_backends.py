"""Telemetry configuration (connection strings, the backend setting) and what is particular to
each backend: Entra ID with OpenTelemetry, how each sends metrics, the modules each loads, and
the one private OpenCensus member, tested against the versions setup.py allows."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import re
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from packaging.requirements import Requirement

from diabetes_spark import jobs, telemetry
from diabetes_spark.errors import ConfigurationError, DiabetesSparkError
from diabetes_spark.params import TrainParams
from diabetes_spark.telemetry.config import parse_connection_string, sdk_environment
from tests.collector import Collector

ENV = telemetry.ENV_CONNECTION_STRING
KEY = "4a5b6c7d-1e2f-4a3b-8c9d-0e1f2a3b4c5d"
SECRET = "Sup3r+S3cret/AccountKey=="
ROOT = Path(__file__).resolve().parent.parent
EXPORTER_THREADS = ("LogHandler Worker", "AzureExporter Worker", "OtelBatchLogRecordProcessor")


def _exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in EXPORTER_THREADS and t.is_alive()]


def _metric_points(collector: Collector) -> list[tuple[str, float, int]]:
    points = [e["data"]["baseData"]["metrics"][0] for e in collector.of_type("Metric")]
    return sorted((p["name"], p["value"], p.get("count", 1)) for p in points)


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (KEY.upper(), (KEY, "https://dc.services.visualstudio.com")),
        (
            f"instrumentationkey={KEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;",
            (KEY, "https://westeurope-5.in.applicationinsights.azure.com"),
        ),
        (
            f"InstrumentationKey={KEY};EndpointSuffix=applicationinsights.azure.cn;Location=chinaeast2",
            (KEY, "https://chinaeast2.dc.applicationinsights.azure.cn"),
        ),
        (
            f" InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:8080/;LiveEndpoint=https://x/;ApplicationId=a1 ",
            (KEY, "http://127.0.0.1:8080"),
        ),
    ],
)
def test_connection_strings_and_bare_keys_are_normalised(value: str, expected: tuple[str, str]) -> None:
    assert parse_connection_string(value, "test")[:2] == expected


def test_an_entra_id_connection_string_is_parsed_and_given_to_the_exporter_as_such() -> None:
    value = (
        f"InstrumentationKey={KEY};IngestionEndpoint=https://x.example/;Authorization=aad;AADAudience=https://m.example"
    )
    parsed = parse_connection_string(value, "test")
    assert parsed == (KEY, "https://x.example", True, "https://m.example")
    expected = f"InstrumentationKey={KEY};IngestionEndpoint=https://x.example;AADAudience=https://m.example"
    assert parsed.for_exporter() == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("InstrumentationKey=not-a-guid-Sup3rS3cret", "InstrumentationKey is not a GUID"),
        ("Sup3rS3cret-not-a-connection-string", "a part has no '='"),
        ("IngestionEndpoint=https://x.example/", "no InstrumentationKey"),
        (f"InstrumentationKey={KEY};Authorization=Sup3rS3cret", "Authorization is neither ikey nor AAD"),
        (
            f"InstrumentationKey={KEY};IngestionEndpoint=ftp://Sup3rS3cret.example",
            "IngestionEndpoint is not an http(s) URL",
        ),
    ],
)
def test_an_invalid_connection_string_fails_at_start_without_echoing_it(value: str, problem: str) -> None:
    before = _exporter_threads()
    expected = rf"invalid Application Insights connection string \(passed to telemetry.start\): .*{re.escape(problem)}"
    with pytest.raises(ConfigurationError, match=expected) as info:
        telemetry.start(telemetry.COMPONENT_TRAIN, connection_string=value)
    assert "Sup3rS3cret" not in str(info.value) and KEY not in str(info.value)
    # Nothing was started: the SDK would leave a worker thread behind that fails forever.
    assert _exporter_threads() == before
    assert logging.getLogger(telemetry.COMPONENT_TRAIN).handlers == []


def test_a_bad_key_in_the_environment_fails_at_job_start(
    spark, mlflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "InstrumentationKey=12345")
    params = TrainParams(
        training_data="sample:diabetes.csv", experiment="telemetry-bad-key", model_name="never_trained"
    )
    with pytest.raises(
        ConfigurationError, match=r"\(\$APPLICATIONINSIGHTS_CONNECTION_STRING\): its InstrumentationKey is not"
    ):
        jobs.run_training(spark, params, home=mlflow_home)
    import mlflow

    assert mlflow.get_experiment_by_name("telemetry-bad-key") is None  # failed before any work


def test_without_a_connection_string_telemetry_is_console_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    before = threading.active_count()
    tel = telemetry.start(telemetry.COMPONENT_SCORE, secrets=[SECRET])
    assert not tel.exporting and threading.active_count() == before
    with pytest.raises(ValueError, match="boom"), tel.span("score") as log:
        log.warning("key is %s", SECRET)
        raise ValueError("boom")
    tel.record({"rows_in": 3})
    tel.close()
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    # Console: the redacted warning; the failure is not logged there (the caller reports the exception).
    assert messages == [("Batch_Score_Orchestrator.score", "key is [REDACTED]")]
    restored = logging.getLogger(telemetry.COMPONENT_SCORE)
    assert restored.propagate and not restored.handlers


# -- the backend setting -------------------------------------------------------------------------


def _sdk_that_sent(backend: str | None) -> str:
    """``oc`` or ``otel``: the SDK named in the envelopes' ``ai.internal.sdkVersion``."""
    with Collector() as collector:
        telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=collector.connection_string(), backend=backend
        ).close()
    (version,) = {e["tags"]["ai.internal.sdkVersion"] for e in collector.envelopes}
    return "otel" if ":otel" in version else "oc" if ":oc" in version else version


def test_the_backend_comes_from_the_argument_else_the_environment_else_opencensus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(telemetry.ENV_BACKEND, raising=False)
    assert _sdk_that_sent("") == "oc"
    monkeypatch.setenv(telemetry.ENV_BACKEND, "OpenTelemetry")
    assert _sdk_that_sent(None) == "otel"
    assert _sdk_that_sent("opencensus") == "oc"
    monkeypatch.setenv(telemetry.ENV_BACKEND, "zipkin")
    with pytest.raises(
        ConfigurationError, match=r"\$DIABETES_SPARK_TELEMETRY_BACKEND must be one of opencensus, opentelemetry"
    ):
        telemetry.start(telemetry.COMPONENT_SCORE, connection_string="")


def test_entra_id_with_opencensus_is_a_configuration_error_naming_the_backend_that_can() -> None:
    before = _exporter_threads()
    connection = f"InstrumentationKey={KEY};IngestionEndpoint=https://x.example/;Authorization=AAD"
    with pytest.raises(ConfigurationError, match=r"Authorization=AAD .* opencensus .* to opentelemetry") as info:
        telemetry.start(telemetry.COMPONENT_SCORE, connection_string=connection, backend="opencensus")
    assert KEY not in str(info.value)
    assert _exporter_threads() == before


def test_opentelemetry_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry.exporter", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "diabetes_spark.telemetry.opentelemetry", raising=False)  # imported afresh
    with pytest.raises(ConfigurationError, match=re.escape("pip install diabetes_spark[opentelemetry]")) as info:
        telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=f"InstrumentationKey={KEY}", backend="opentelemetry"
        )
    assert isinstance(info.value, DiabetesSparkError)  # the console script's exit 2


@pytest.mark.parametrize(
    ("backend", "foreign"),
    [("opentelemetry", ("opencensus",)), ("opencensus", ("opentelemetry", "azure.monitor"))],
)
def test_a_backend_loads_none_of_the_other_sdk(backend: str, foreign: tuple[str, ...]) -> None:
    probe = (
        "import json, sys; from diabetes_spark import telemetry;"
        f"t = telemetry.start('Train_Orchestrator', backend={backend!r}, flush_timeout=0.5,"
        f" connection_string='InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9/');"
        "t.logger().info('x'); t.close();"
        "print(json.dumps([t.exporting, sorted(m for m in sys.modules if m.startswith(('opencensus', 'opentelemetry', 'azure.monitor')))]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    exporting, loaded = json.loads(out.stdout.splitlines()[-1])
    assert exporting and loaded  # the backend did start, with its SDK
    assert [m for m in loaded if m.startswith(foreign)] == []


# -- Entra ID (OpenTelemetry) ----------------------------------------------------------------------


class FixedToken:
    """A TokenCredential (azure.core's protocol) that always gives the same token, and counts the asks."""

    def __init__(self, token: str) -> None:
        self.token, self.scopes = token, []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (bearer tokens go over HTTPS only), trusted through
    $REQUESTS_CA_BUNDLE by the exporter's HTTP client."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(folder / "cert.pem"), str(folder / "key.pem")


@pytest.mark.parametrize(("token", "delivered"), [("t0ken-of-the-run", True), ("an-expired-one", False)])
def test_entra_id_sends_with_the_credentials_token(
    tls: tuple[str, str], token: str, delivered: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls[0])
    credential = FixedToken(token)
    with Collector(token="t0ken-of-the-run", tls=tls) as collector:
        connection = collector.connection_string(KEY) + ";Authorization=AAD"
        tel = telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=connection, backend="opentelemetry", credential=credential
        )
        with tel.span("score") as log:
            log.info("scored")
        tel.record({"rows_scored": 38})
        tel.close()
    assert credential.scopes and set(collector.authorizations) == {f"Bearer {token}"}
    lost = [
        r.getMessage() for r in caplog.records if r.name == "diabetes_spark.telemetry" and r.levelno >= logging.WARNING
    ]
    if delivered:
        assert collector.refused == 0 and lost == []
        kinds = {e["name"].rsplit(".", 1)[-1] for e in collector.envelopes}
        assert kinds == {"Message", "RemoteDependency", "Request", "Metric"}
    else:  # the resource refuses a bad token: the records are lost, reported once, the job unaffected
        assert collector.envelopes == [] and collector.refused >= 1
        (warning,) = lost
        assert "records were lost" in warning and "Unauthorized" in warning


# -- metrics: what each backend promises -------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        # OpenCensus: one envelope per recorded value.
        ("opencensus", [("rows_in", 2.0, 1), ("rows_in", 40.0, 1)]),
        # OpenTelemetry: per export interval, one envelope per name and dimensions (value = sum, with count).
        ("opentelemetry", [("rows_in", 42.0, 2)]),
    ],
)
def test_a_metric_recorded_twice_with_the_same_dimensions(backend: str, expected: list[tuple[str, float, int]]) -> None:
    with Collector() as collector:
        tel = telemetry.start(
            telemetry.COMPONENT_SCORE, connection_string=collector.connection_string(), backend=backend
        )
        tel.record({"rows_in": 40})
        tel.record({"rows_in": 2})
        tel.close()
        points = [p for p in _metric_points(collector) if p[0] != telemetry.RUN_DURATION_METRIC]
        names = {p[0] for p in _metric_points(collector)}
    assert points == expected
    # Nothing but ours: no statsbeat, SDK stats or resource metrics (those would go to Microsoft's endpoints).
    assert names == {"rows_in", telemetry.RUN_DURATION_METRIC}


# -- the one private OpenCensus member ---------------------------------------------------------------


def test_the_span_workers_stop_is_tested_against_the_pinned_opencensus_range() -> None:
    from opencensus.ext.azure.trace_exporter import AzureExporter

    from diabetes_spark.telemetry.opencensus import _stop_span_worker

    pinned = [
        Requirement(r)
        for r in re.findall(r'"(opencensus-ext-azure[^"]*)"', (ROOT / "setup.py").read_text(encoding="utf-8"))
    ]
    (requirement,) = pinned
    assert str(requirement.specifier) and requirement.specifier.contains(version("opencensus-ext-azure"))
    assert "<" in str(requirement.specifier)  # an upper bound: a new minor release may drop the member

    def workers() -> int:
        return sum(t.name == "AzureExporter Worker" and t.is_alive() for t in threading.enumerate())

    before = workers()
    with sdk_environment("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"):  # no statsbeat to Microsoft
        exporter = AzureExporter(connection_string=f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9/")
    assert workers() == before + 1
    _stop_span_worker(exporter, 2.0)
    deadline = time.monotonic() + 2.0
    while workers() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert workers() == before
