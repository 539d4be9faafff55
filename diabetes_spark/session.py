"""The Spark session: Databricks' own, a Spark Connect server's, or local Spark with Delta Lake;
nothing else creates one.

``SPARK_REMOTE=sc://host:port`` (pyspark's own variable) selects a Spark Connect server, as on
serverless and standard-access compute; it is checked at once (reachable, with Delta). Otherwise
it is ``local[*]`` with Delta Lake (jars resolved from Maven Central on the first start
by ``configure_spark_with_delta_pip``) and the ``hadoop-azure`` jar, so ``abfss://`` paths resolve.
Later starts take the resolved jars and the class-data archive from :mod:`diabetes_spark.jvm_cache`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

from diabetes_spark.errors import ConfigurationError, about, error_condition, one_line
from diabetes_spark.jvm_errors import SPARK_OOM_EXIT, JvmMemoryError, jvm_died, out_of_memory, ran_out_of_memory
from diabetes_spark.redaction import SPARK_REDACTION_REGEX
from diabetes_spark.runtime import (
    ENV_CONNECT_TIMEOUT,
    connect_timeout,
    environment,
    hadoop_version,
    is_databricks,
    is_serverless,
    memory_limit,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_log = logging.getLogger(__name__)

#: Environment variable naming the Spark master for local runs (default ``local[*]``).
ENV_MASTER = "DIABETES_SPARK_MASTER"
#: Environment variable setting the local driver's memory (``spark.driver.memory``, e.g. ``1500m``),
#: over the size :func:`driver_memory` derives from the memory the process may use.
ENV_DRIVER_MEMORY = "DIABETES_SPARK_DRIVER_MEMORY"
#: What a local driver leaves outside its heap: the Python process (pyspark, MLflow, pandas imported)
#: and the JVM's own memory beyond the heap (metaspace, code, threads, direct buffers, mapped jars).
DRIVER_RESERVE = 1 << 30
#: The share of the rest the heap takes; the remainder absorbs what the reserve underestimates.
DRIVER_FRACTION = 0.75
#: The smallest heap a local session with Delta gets, even under a tighter limit, and the largest:
#: one machine's jobs stream through their data, and the heap is memory the host cannot take back.
DRIVER_FLOOR, DRIVER_CEILING = 512 << 20, 4 << 30
#: pyspark's own variable naming a Spark Connect server (``sc://host:port``); ``--remote`` sets it.
ENV_REMOTE = "SPARK_REMOTE"
#: Spark Connect's own default port.
DEFAULT_PORT = 15002
#: Spark versions (major.minor) of the tested Databricks LTS ML runtimes: 15.4 and 16.4 (3.5), 17.3
#: (4.0), 18 (4.1). Another version gets a warning at start, not a refusal.
SUPPORTED_SPARK = ("3.5", "4.0", "4.1")
_CONNECT_HELP = (
    "start one (diabetes-spark connect-server, see docs/spark-connect.md) or unset SPARK_REMOTE to run local Spark"
)

#: Settings the jobs need on any cluster (also in the job clusters' ``spark_conf``, ``resources/``).
#: Validation and scoring make one wide expression per row; whole-stage codegen turns it into a Java
#: method HotSpot will not JIT past 8000 bytes of bytecode, and the stage then runs interpreted. At
#: Spark's recommended HotSpot limit such a stage falls back to split, compiled code. Timestamps
#: (``scored_at``) are written as Parquet's standard INT64 microseconds rather than the legacy INT96,
#: which costs a Julian-day conversion per row.
JOB_SPARK_CONF: Mapping[str, str] = {
    "spark.sql.codegen.hugeMethodLimit": "8000",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}

LOCAL_SPARK_CONF: Mapping[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.redaction.regex": SPARK_REDACTION_REGEX,
    # Delta rebuilds table state with 50 tasks by default: on a few local cores that dominates small writes.
    "spark.databricks.delta.snapshotPartitions": str(max(2, os.cpu_count() or 2)),
    **JOB_SPARK_CONF,
}


#: Settings for a local session that only ever handles a few hundred rows (the demo on the shipped
#: sample). Such a JVM lives under a minute: the C2 compiler would spend a core for most of it on code
#: that never runs long enough to pay it back, and Janino would compile whole stages each run once
#: over rows Spark's interpreted operators finish faster. Not for the jobs: their inputs can be large.
SMALL_INPUT_CONF: Mapping[str, str] = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    "spark.sql.codegen.wholeStage": "false",
}


def small_input(conf: Mapping[str, str]) -> dict[str, str]:
    """``conf`` with :data:`SMALL_INPUT_CONF` under it (JVM options joined, ``conf``'s others win)."""
    merged = {**SMALL_INPUT_CONF, **conf}
    key = "spark.driver.extraJavaOptions"
    merged[key] = " ".join(o for o in (SMALL_INPUT_CONF[key], conf.get(key, "")) if o)
    return merged


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
        conf: Extra Spark settings for a new local session, applied over :data:`LOCAL_SPARK_CONF`
            (``spark.driver.extraJavaOptions`` is joined with the class-data archive's options).

    Returns:
        A session with Delta Lake enabled.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if is_databricks():
        return warn_if_untested(SparkSession.builder.getOrCreate())
    if os.environ.get(ENV_REMOTE):
        return warn_if_untested(_connect(os.environ[ENV_REMOTE]))

    from delta import configure_spark_with_delta_pip

    from diabetes_spark import jvm_cache

    chosen = master or os.environ.get(ENV_MASTER) or "local[*]"
    builder = SparkSession.builder.appName(app_name).master(chosen)
    # Spark's progress bar where a person watches (a terminal), not in CI logs or piped output.
    progress = {"spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false"}
    sized = {"spark.driver.memory": driver_memory(memory_limit())}
    memory = {"spark.driver.memory": os.environ[ENV_DRIVER_MEMORY]} if os.environ.get(ENV_DRIVER_MEMORY) else {}
    settings = {**LOCAL_SPARK_CONF, **sized, **progress, **(conf or {}), **memory}
    given = settings.get("spark.driver.extraJavaOptions", "")
    # Recording an archive (jvm_cache.recording_class_archive): do not map the old one as well.
    archive = "" if "ArchiveClassesAtExit" in given else jvm_cache.archive_options()
    java_options = " ".join(o for o in (given, archive) if o)
    if java_options:
        settings["spark.driver.extraJavaOptions"] = java_options
    for key, value in settings.items():
        builder = builder.config(key, value)
    azure = f"org.apache.hadoop:hadoop-azure:{hadoop_version()}"
    jars = None
    if not {"spark.jars", "spark.jars.packages"} & settings.keys():
        # Resolved by an earlier start, else now, quietly, once (with the cache off: by Ivy below).
        jars = jvm_cache.resolved_jars() or (jvm_cache.fetch_jars([azure]) if jvm_cache.jar_list() else None)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        builder = configure_spark_with_delta_pip(builder, extra_packages=[azure])
    # Python workers must run this interpreter (with its packages), not whatever python3 is on PATH;
    # pyspark reads $PYSPARK_PYTHON once, as the context starts (a user's own setting wins).
    python = {"PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON") or sys.executable}
    with environment(python), about(f"Spark (master {chosen!r})"):
        spark = builder.getOrCreate()
    if jars is None:
        # With a default given get() returns a str; pyspark types it str | None.
        jvm_cache.remember_jars(cast(str, spark.conf.get("spark.jars", "")))
    spark.sparkContext.setLogLevel("ERROR")  # classic-only: this branch built a local classic session
    return warn_if_untested(spark)


def driver_memory(limit: int | None) -> str:
    """``spark.driver.memory`` for a local driver that may use ``limit`` bytes (the process's cgroup
    limit, else physical memory; ``None``: unknown): :data:`DRIVER_FRACTION` of what is left after
    :data:`DRIVER_RESERVE`, between :data:`DRIVER_FLOOR` and :data:`DRIVER_CEILING`, in MiB."""
    if limit is None:
        return f"{DRIVER_CEILING >> 20}m"
    heap = int((limit - DRIVER_RESERVE) * DRIVER_FRACTION)
    return f"{min(DRIVER_CEILING, max(DRIVER_FLOOR, heap)) >> 20}m"


def _connect(url: str) -> SparkSession:
    """The session of the Spark Connect server at ``url``, checked before anything is read: it
    answers, and it has Delta Lake.

    Raises:
        ConfigurationError: The server does not answer, or has no Delta Lake.
    """
    from pyspark.sql import SparkSession

    where = f"{ENV_REMOTE}={url}"
    check_reachable(url, where)
    try:
        spark = SparkSession.builder.remote(url).getOrCreate()
        spark.sql("SELECT 1").collect()
    except ImportError as e:
        raise ConfigurationError(
            f"{where} needs pyspark's Spark Connect client: pip install 'pyspark[connect]' ({e})"
        ) from e
    except Exception as e:
        raise ConfigurationError(f"the Spark Connect server at {where} refused a session: {one_line(e)}") from e
    check_delta(spark, where)
    return spark


def warn_if_untested(spark: SparkSession) -> SparkSession:
    """A Spark version outside the tested runtimes is used, with a warning naming the tested ones.
    Not on serverless compute, whose server's version moves on its own (the environment version is
    what a job pins there)."""
    version = ".".join(spark.version.split(".")[:2])
    if version not in SUPPORTED_SPARK and not is_serverless():
        _log.warning(
            "Spark %s is not among the tested versions (Spark %s: Databricks Runtime 15.4, 16.4, 17.3 and 18 "
            "LTS ML); the jobs run, but were not proven on it",
            spark.version,
            ", ".join(SUPPORTED_SPARK),
        )
    return spark


#: The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (Spark Connect is one)
#: answers with a SETTINGS frame of its own (frame type 4, the fourth byte of the 9-byte header).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_reachable(url: str, where: str, *, timeout: float | None = None) -> None:
    """Fail within :func:`connect_timeout` when nothing at ``url`` (``sc://host:port/;...``) speaks
    gRPC: pyspark's client would otherwise retry for many minutes before it reports the server
    missing. A server that listens but answers no HTTP/2 (another service on the port) fails too;
    over TLS (``use_ssl=true``) only the connection is checked.

    Raises:
        ConfigurationError: The URL is not ``sc://``, nothing accepts a connection there, or what
            answers is not a gRPC server.
    """
    parsed = urlparse(url)
    if parsed.scheme != "sc" or not parsed.hostname:
        raise ConfigurationError(f"{where} is not a Spark Connect URL: expected sc://host:port")
    host, port = parsed.hostname, parsed.port or DEFAULT_PORT
    timeout = timeout or connect_timeout()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if "use_ssl=true" in url.lower():
                return
            sock.sendall(_HTTP2_HELLO)
            answer = sock.recv(9)
    except OSError as e:
        raise ConfigurationError(
            f"no Spark Connect server answers at {where} within {timeout:g} s ({e.strerror or e}); {_CONNECT_HELP} "
            f"({ENV_CONNECT_TIMEOUT} allows a longer wait)"
        ) from e
    if len(answer) < 4 or answer[3] != 4:
        raise ConfigurationError(
            f"something listens at {where} but it is not a Spark Connect server (no gRPC answer); check the port, "
            f"or {_CONNECT_HELP}"
        )


def jvm_exit_code(wait: float = 10.0) -> int | None:
    """The exit code of the classic Spark JVM this process started, once it has exited (killed: minus
    the signal); ``None`` while it runs, or where there is none.

    A JVM whose SparkContext stopped or that no longer answers is given ``wait`` seconds to end:
    after a task runs out of memory Spark exits the JVM, and its shutdown hooks stop the context
    first. pyspark has no public call for it: this reads the process of the py4j gateway pyspark
    launched (``SparkContext._gateway.proc``, pyspark 3.5 to 4.1).
    """
    if "pyspark" not in sys.modules:
        return None
    import subprocess

    from pyspark import SparkContext

    process = getattr(getattr(SparkContext, "_gateway", None), "proc", None)
    if process is None:
        return None
    context = SparkContext._active_spark_context
    if process.poll() is None and context is not None and not _running(context):
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            return None
    return process.poll()


def _running(context: object) -> bool:
    """True when the JVM answers and its SparkContext is not stopped."""
    try:
        return not context._jsc.sc().isStopped()  # type: ignore[attr-defined]
    except Exception:  # py4j cannot reach the JVM: it is ending
        return False


def driver_memory_given() -> str:
    """``spark.driver.memory`` of the local driver: as its running SparkContext has it, else as
    :func:`get_spark` sets it (:data:`ENV_DRIVER_MEMORY`, else sized by :func:`driver_memory`)."""
    value = None
    if "pyspark" in sys.modules:
        from pyspark import SparkContext

        context = SparkContext._active_spark_context
        try:
            value = context.getConf().get("spark.driver.memory") if context is not None else None
        except Exception:  # a JVM that is gone cannot be asked
            value = None
    return value or os.environ.get(ENV_DRIVER_MEMORY) or driver_memory(memory_limit())


def environment_error(error: BaseException) -> JvmMemoryError | None:
    """``error`` as the failure of the Spark JVM it is, or ``None``: a job that ran out of JVM memory
    (:func:`~diabetes_spark.jvm_errors.out_of_memory`, or a local JVM that exited with Spark's code
    for it), or a local JVM that died under the job. Both name the memory limit and what to set."""
    if isinstance(error, JvmMemoryError):  # classified by the job's recorder: no second look, no second wait
        return error
    local = not (is_databricks() or os.environ.get(ENV_REMOTE))
    found = out_of_memory(error)
    code = jvm_exit_code()
    origin = error
    while origin.__cause__ is not None:  # a job's own error raised from the JVM's: the JVM's is the original
        origin = origin.__cause__
    if found or code == SPARK_OOM_EXIT:
        cause = found or f"{type(origin).__name__}, JVM exit code {code}"
        return ran_out_of_memory(cause, memory_limit(), driver_memory_given() if local else None)
    if code is not None:
        return jvm_died(type(origin).__name__, memory_limit())
    return None


def check_delta(spark: SparkSession, where: str) -> None:
    """Fail when the server has no Delta Lake: every table the jobs read and write is Delta.

    Asks for the history of a path that does not exist: a server with Delta refuses it with one
    of Delta's own error classes, one without cannot even parse the statement.

    Raises:
        ConfigurationError: The answer is not Delta's.
    """
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
