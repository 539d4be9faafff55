"""A local Spark Connect server (``diabetes-spark connect-server``): the ``spark-submit`` command
that starts one from the installed pyspark with Delta Lake, configured as local sessions are.

Serverless and standard-access compute run the jobs over Spark Connect; locally the same is
proven against such a server, which clients select with ``SPARK_REMOTE=sc://127.0.0.1:15002``
(the client's checks are :mod:`session`'s).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from diabetes_spark.errors import ConfigurationError
from diabetes_spark.runtime import hadoop_version, memory_limit
from diabetes_spark.session import DEFAULT_PORT, ENV_MASTER, LOCAL_SPARK_CONF, driver_memory

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def _scala() -> str:
    """The Scala version of the installed pyspark's jars."""
    import pyspark

    return "2.13" if pyspark.__version__.startswith("4") else "2.12"


def _jar_arguments() -> list[str]:
    """``--jars`` of Delta and hadoop-azure (resolved once, as local sessions do), or ``--packages``."""
    from importlib import metadata

    import pyspark

    from diabetes_spark import jvm_cache

    azure = f"org.apache.hadoop:hadoop-azure:{hadoop_version()}"
    jars = jvm_cache.resolved_jars() or (jvm_cache.fetch_jars([azure]) if jvm_cache.jar_list() else None)
    packages = [] if jars else [f"io.delta:delta-spark_{_scala()}:{metadata.version('delta-spark')}", azure]
    if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):  # pyspark 3.5 ships no server
        packages.append(f"org.apache.spark:spark-connect_{_scala()}:{pyspark.__version__}")
    return [*(["--jars", ",".join(jars)] if jars else []), *(["--packages", ",".join(packages)] if packages else [])]


def check_port_free(port: int) -> None:
    """Fail before starting a server when something already listens on 127.0.0.1:``port``.

    Raises:
        ConfigurationError: The port is taken; the message says how to pick another.
    """
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            raise ConfigurationError(
                f"port {port} on 127.0.0.1 is in use ({e.strerror}): stop what uses it, or start the server with "
                f"--port and point SPARK_REMOTE (or --remote) at sc://127.0.0.1:<that port> [{type(e).__name__}]"
            ) from e


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

    dropped = () if delta else ("spark.sql.extensions", "spark.sql.catalog.spark_catalog")
    settings = {
        **{key: value for key, value in LOCAL_SPARK_CONF.items() if key not in dropped},
        "spark.driver.memory": driver_memory(memory_limit()),
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
