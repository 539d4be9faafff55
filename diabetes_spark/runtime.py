"""Where the code runs (Databricks, Spark Connect, local Spark) and what it may change there:
probes (of the runtime, and of the services it is pointed at) and small context helpers only. A
leaf: it imports nothing else of the package but errors (and, lazily, the scrubber of redaction).

Steps and I/O are handed a session or a flag; they call these probes, never :mod:`session`.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from diabetes_spark.errors import ConfigurationError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: Environment variable naming the local workspace folder (default ``./lakehouse``): the MLflow
#: SQLite store and artifacts live there, and the demo's tables.
ENV_HOME = "DIABETES_SPARK_HOME"

#: Environment variable bounding, in seconds, the wait for a service that does not answer (a Spark
#: Connect server, an MLflow tracking server) before the job fails naming it; default 30.
ENV_CONNECT_TIMEOUT = "DIABETES_SPARK_CONNECT_TIMEOUT"

_ENVIRON_LOCK = threading.RLock()


def is_databricks() -> bool:
    """True inside a Databricks runtime (cluster or job)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def is_serverless() -> bool:
    """True on Databricks serverless compute, whose runtime version reads ``client.<n>`` (the test
    MLflow's ``is_in_databricks_serverless_runtime`` makes)."""
    return os.environ.get("DATABRICKS_RUNTIME_VERSION", "").startswith("client.")


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (serverless, standard access, Databricks Connect, a server)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def local_home() -> Path:
    """The local workspace folder: ``$DIABETES_SPARK_HOME`` or ``./lakehouse``."""
    return Path(os.environ.get(ENV_HOME) or "lakehouse")


def hadoop_version() -> str:
    """The Hadoop version bundled with the installed pyspark (``hadoop-azure`` must match it).

    Raises:
        ConfigurationError: The pyspark installation has no Hadoop client jar.
    """
    import pyspark

    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))
    for jar in jars:
        match = re.search(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar$", jar)
        if match:
            return match.group(1)
    raise ConfigurationError(
        "cannot find hadoop-client-api-*.jar in the pyspark installation; reinstall pyspark ('pip install .[local]')"
    )


@contextmanager
def cached(df: DataFrame) -> Iterator[DataFrame]:
    """``df`` persisted (memory and disk) for the block on classic Spark, so its passes share one
    computation; over Spark Connect it is left as it is, since serverless compute refuses caching:
    each pass recomputes it from its input (pinned to one Delta version by the callers)."""
    if is_connect(df.sparkSession):
        yield df
        return
    from pyspark import StorageLevel

    df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield df
    finally:
        df.unpersist()


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """The process environment with ``values`` set (``None``: removed) for the block, then put back
    exactly as it was, absent variables included. The one place the package edits ``os.environ``.
    """
    with _ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        _apply(values)
    try:
        yield
    finally:
        with _ENVIRON_LOCK:
            _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def memory_limit(root: str = "/sys/fs/cgroup") -> int | None:
    """The bytes this process may use: its cgroup's limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``, from ``/proc/self/cgroup``) when there is one, else the machine's
    physical memory, else ``None``."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            candidates = [
                Path(root, path.lstrip("/"), "memory.max"),
                Path(root, "unified", path.lstrip("/"), "memory.max"),
            ]
        elif "memory" in controllers.split(","):
            candidates = [Path(root, "memory", path.lstrip("/"), "memory.limit_in_bytes")]
        else:
            continue
        for candidate in candidates:
            try:
                text = candidate.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:  # "no limit": v2 says max, v1 a huge number
                return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def connect_timeout() -> float:
    """Seconds to wait for a service that does not answer: ``$DIABETES_SPARK_CONNECT_TIMEOUT``, else 30."""
    text = os.environ.get(ENV_CONNECT_TIMEOUT, "").strip()
    try:
        value = float(text) if text else 30.0
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigurationError(f"{ENV_CONNECT_TIMEOUT} must be a number of seconds > 0; got {text!r}")
    return value


def check_store(uri: str, variable: str) -> None:
    """Fail at once, naming ``uri`` (redacted) and the ``variable`` that set it, when the MLflow
    store there cannot be used: an HTTP server that does not answer as MLflow within the connect
    timeout (MLflow's own retries would take minutes), a SQLite file that cannot be opened.

    Raises:
        ConfigurationError: The store cannot be reached or opened.
    """
    from diabetes_spark.redaction import redact_url

    scheme = uri.split(":", 1)[0].lower()
    where = f"the MLflow store {redact_url(uri)} (set by {variable})"
    if scheme in ("http", "https"):
        import requests

        timeout = connect_timeout()
        probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name"
        try:
            answer = requests.get(probe, params={"experiment_name": "Default"}, timeout=timeout)
        except requests.RequestException as e:
            raise ConfigurationError(
                f"{where} did not answer within {timeout:g} s: check the variable and that the server runs "
                f"({ENV_CONNECT_TIMEOUT} allows a longer wait) [{type(e).__name__}]"
            ) from e
        speaks_mlflow = answer.status_code in (200, 401, 403) or "error_code" in answer.text[:2000]
        if not speaks_mlflow:
            raise ConfigurationError(
                f"{where} answered, but not as an MLflow tracking server (HTTP {answer.status_code}): check the "
                "variable's host, port and path"
            )
    elif scheme == "sqlite":
        import sqlite3

        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        try:
            sqlite3.connect(path or ":memory:").close()
        except sqlite3.Error as e:
            raise ConfigurationError(
                f"{where} cannot be opened ({e}): point the variable at a folder you can write to [{type(e).__name__}]"
            ) from e
