"""Where we run: Databricks (its own session and dbutils) or the embedded local default.

Only this module creates a SparkSession. Locally it is ``local[*]`` with Delta Lake (jars resolved
from Maven Central on first start by ``configure_spark_with_delta_pip`` and cached by Ivy) and the
``hadoop-azure`` jar so ``abfss://`` paths resolve.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["get_spark", "stop_spark", "is_databricks", "hadoop_version", "local_home", "LOCAL_SPARK_CONF", "REDACTION_REGEX"]

_log = logging.getLogger(__name__)

#: Environment variable naming the Spark master for local runs (default ``local[*]``).
ENV_MASTER = "DIABETES_SPARK_MASTER"
#: Environment variable naming the local workspace folder (default ``./lakehouse``): the MLflow
#: SQLite store and artifacts live there, and the demo's tables.
ENV_HOME = "DIABETES_SPARK_HOME"

#: Spark's default redaction pattern, extended so ADLS account keys (``fs.azure.account.key.*``)
#: and SAS tokens never show in the UI, event logs or ``spark.conf`` dumps.
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|account[.]key|sas|connection[.]?string"

LOCAL_SPARK_CONF: Mapping[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "4g",
    "spark.redaction.regex": REDACTION_REGEX,
}


def is_databricks() -> bool:
    """True inside a Databricks runtime (cluster or job)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def local_home() -> Path:
    """The local workspace folder: ``$DIABETES_SPARK_HOME`` or ``./lakehouse``."""
    return Path(os.environ.get(ENV_HOME) or "lakehouse")


def hadoop_version() -> str:
    """The Hadoop version bundled with the installed pyspark (``hadoop-azure`` must match it)."""
    import pyspark

    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))
    for jar in jars:
        match = re.search(r"hadoop-client-api-(\d+\.\d+\.\d+)\.jar$", jar)
        if match:
            return match.group(1)
    raise RuntimeError(
        "cannot find hadoop-client-api-*.jar in the pyspark installation; reinstall pyspark ('pip install .[local]')"
    )


def get_spark(
    app_name: str = "diabetes-spark",
    *,
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """The SparkSession to use: the active one (Databricks, or one already built), else a local one.

    Args:
        app_name: Application name of a new local session.
        master: Spark master of a new local session (default: ``$DIABETES_SPARK_MASTER`` or
            ``local[*]``).
        conf: Extra Spark settings for a new local session, applied over :data:`LOCAL_SPARK_CONF`.

    Returns:
        A session with Delta Lake enabled.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if is_databricks():
        return SparkSession.builder.getOrCreate()

    from delta import configure_spark_with_delta_pip

    builder = SparkSession.builder.appName(app_name).master(master or os.environ.get(ENV_MASTER, "local[*]"))
    for key, value in {**LOCAL_SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    azure = f"org.apache.hadoop:hadoop-azure:{hadoop_version()}"
    builder = configure_spark_with_delta_pip(builder, extra_packages=[azure])
    _log.info("starting local Spark with Delta (first start downloads jars from Maven Central)")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop_spark(spark: Any) -> None:
    """Stop a local session (never the Databricks one, which the runtime owns)."""
    if not is_databricks():
        spark.stop()
