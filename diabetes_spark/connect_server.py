"""Spark Connect: the checks a client makes before a job uses a server, and a local server.

Serverless and standard-access compute run the jobs over Spark Connect. Locally, the same is
proven against a server started from the installed pyspark with Delta Lake
(``diabetes-spark connect-server``), which clients select with ``SPARK_REMOTE=sc://127.0.0.1:15002``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from diabetes_spark.errors import ConfigurationError, one_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "DEFAULT_PORT",
    "SERVER_CLASS",
    "check_reachable",
    "check_delta",
    "server_command",
    "server_environment",
    "start",
    "stop",
]

_log = logging.getLogger(__name__)

#: Spark Connect's own default port.
DEFAULT_PORT = 15002
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
_HELP = "start one (diabetes-spark connect-server, see the README) or unset SPARK_REMOTE to run local Spark"


def check_reachable(url: str, where: str, *, timeout: float = 10.0) -> None:
    """Fail at once when nothing listens at ``url`` (``sc://host:port/;...``): pyspark's client would
    otherwise retry for minutes before it reports the server missing.

    Raises:
        ConfigurationError: The URL is not ``sc://``, or nothing accepts a connection there.
    """
    parsed = urlparse(url)
    if parsed.scheme != "sc" or not parsed.hostname:
        raise ConfigurationError(f"{where} is not a Spark Connect URL: expected sc://host:port")
    host, port = parsed.hostname, parsed.port or DEFAULT_PORT
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigurationError(f"no Spark Connect server answers at {where} ({e.strerror or e}); {_HELP}") from e


def check_delta(spark: SparkSession, where: str) -> None:
    """Fail when the server has no Delta Lake: every table the jobs read and write is Delta.

    Asks for the history of a path that does not exist: a server with Delta refuses it with one
    of Delta's own error classes, one without cannot even parse the statement.

    Raises:
        ConfigurationError: The answer is not Delta's.
    """
    from diabetes_spark.storage import error_condition

    probe = f"/diabetes-spark-delta-probe-{uuid.uuid4().hex}"
    try:
        spark.sql(f"DESCRIBE HISTORY delta.`{probe}` LIMIT 1").collect()
    except Exception as e:
        if error_condition(e).startswith("DELTA_"):
            return
        raise ConfigurationError(
            f"the Spark Connect server at {where} has no Delta Lake ({one_line(e)}); start it with the Delta "
            "extension and catalog (spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension, "
            "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog) and Delta's jars"
        ) from e


def _scala() -> str:
    """The Scala version of the installed pyspark's jars."""
    import pyspark

    return "2.13" if pyspark.__version__.startswith("4") else "2.12"


def _jar_arguments() -> list[str]:
    """``--jars`` of Delta and hadoop-azure (resolved once, as local sessions do), or ``--packages``."""
    from importlib import metadata

    import pyspark

    from diabetes_spark import jvm_cache
    from diabetes_spark.session import hadoop_version

    azure = f"org.apache.hadoop:hadoop-azure:{hadoop_version()}"
    jars = jvm_cache.resolved_jars() or (jvm_cache.fetch_jars([azure]) if jvm_cache.jar_list() else None)
    packages = [] if jars else [f"io.delta:delta-spark_{_scala()}:{metadata.version('delta-spark')}", azure]
    if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):  # pyspark 3.5 ships no server
        packages.append(f"org.apache.spark:spark-connect_{_scala()}:{pyspark.__version__}")
    return [*(["--jars", ",".join(jars)] if jars else []), *(["--packages", ",".join(packages)] if packages else [])]


def server_environment() -> dict[str, str]:
    """The server's environment: Python workers run this interpreter, and it is no client itself."""
    environment = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    environment.pop("SPARK_REMOTE", None)
    return environment


def server_command(
    port: int = DEFAULT_PORT,
    *,
    conf: Mapping[str, str] | None = None,
    jars: Sequence[str] = (),
    master: str = "",
    delta: bool = True,
) -> list[str]:
    """The ``spark-submit`` command of a Spark Connect server on 127.0.0.1:``port``, from the
    installed pyspark, with the local sessions' settings (:data:`LOCAL_SPARK_CONF`) and, unless
    ``delta`` is false, Delta Lake's extension and catalog."""
    import pyspark

    from diabetes_spark.session import ENV_MASTER, LOCAL_SPARK_CONF

    dropped = () if delta else ("spark.sql.extensions", "spark.sql.catalog.spark_catalog")
    settings = {
        **{key: value for key, value in LOCAL_SPARK_CONF.items() if key not in dropped},
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        **(conf or {}),
    }
    spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    master = master or os.environ.get(ENV_MASTER, "local[*]")
    command = [spark_submit, "--class", SERVER_CLASS, "--master", master, "--name", "diabetes-spark-connect"]
    command += ["--jars", ",".join(jars)] if jars else _jar_arguments()
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    return command


def start(
    port: int = DEFAULT_PORT,
    *,
    conf: Mapping[str, str] | None = None,
    jars: Sequence[str] = (),
    master: str = "",
    delta: bool = True,
    log: Path | None = None,
    timeout: float = 300.0,
) -> subprocess.Popen:
    """Start a local Spark Connect server and return once it accepts connections.

    Raises:
        ConfigurationError: It exited, or did not listen within ``timeout`` seconds (its log says why).
    """
    command = server_command(port, conf=conf, jars=jars, master=master, delta=delta)
    output = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=server_environment())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise ConfigurationError(f"the Spark Connect server on port {port} did not start; see {log or 'its output'}")


def stop(process: subprocess.Popen, *, timeout: float = 60.0) -> None:
    """Stop a server started by :func:`start` (its JVM shuts Spark down on SIGTERM)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
