"""Session selection checks that need no server: the Spark Connect URL and its reachability, the
warning for a Spark version outside the tested runtimes, and the demo's small-input settings."""

from __future__ import annotations

import logging
import socket
import time
from types import SimpleNamespace

import pytest

from diabetes_spark import session
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.session import SUPPORTED_SPARK, warn_if_untested


@pytest.mark.parametrize("url", ["http://127.0.0.1:15002", "127.0.0.1:15002", "sc://"])
def test_a_url_that_is_not_spark_connect_is_refused(url: str) -> None:
    with pytest.raises(
        ConfigurationError, match=r"SPARK_REMOTE=.* is not a Spark Connect URL: expected sc://host:port"
    ):
        session.check_reachable(url, f"SPARK_REMOTE={url}")


def test_a_closed_port_fails_at_once_naming_the_variable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(
        ConfigurationError, match=rf"no Spark Connect server answers at SPARK_REMOTE=sc://127.0.0.1:{port}"
    ):
        session.check_reachable(f"sc://127.0.0.1:{port}/;user_id=me", f"SPARK_REMOTE=sc://127.0.0.1:{port}")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("version", "warned"), [("3.3.2", True), ("3.5.0", False), ("4.0.1", False), ("4.1.0", False), ("4.2.0", True)]
)
def test_a_spark_outside_the_tested_runtimes_is_warned_about_not_refused(
    version: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    session = SimpleNamespace(version=version)
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.session"):
        assert warn_if_untested(session) is session
    messages = [r.getMessage() for r in caplog.records]
    assert bool(messages) == warned, messages
    if warned:
        assert f"Spark {version} is not among the tested versions" in messages[0]
        assert all(v in messages[0] for v in SUPPORTED_SPARK) and "15.4, 16.4, 17.3 and 18" in messages[0]


def test_serverless_is_not_warned_about_its_spark_version(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serverless compute's server version moves on its own; its runtime version reads client.<n>."""
    session = SimpleNamespace(version="4.2.0")
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "client.4.9")
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.session"):
        assert warn_if_untested(session) is session
    assert caplog.records == []
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")  # a cluster: its runtime pins Spark
    with caplog.at_level(logging.WARNING, logger="diabetes_spark.session"):
        warn_if_untested(session)
    assert [r.getMessage()[:44] for r in caplog.records] == ["Spark 4.2.0 is not among the tested versions"]


def test_the_demo_session_settings_join_the_java_options_and_yield_to_those_given() -> None:
    # The first command records the class-data archive through the same JVM option: it must survive.
    given = {"spark.driver.extraJavaOptions": "-XX:ArchiveClassesAtExit=/a.jsa", "spark.sql.codegen.wholeStage": "true"}
    assert session.small_input(given) == {
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit=/a.jsa",
        "spark.sql.codegen.wholeStage": "true",
    }
    assert session.small_input({}) == dict(session.SMALL_INPUT_CONF)
