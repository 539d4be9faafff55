"""Where we run: Databricks (its own session and dbutils) or the embedded local default.

Only this module creates a SparkSession. Locally it is ``local[*]`` with Delta Lake (jars resolved
from Maven Central on first start by ``configure_spark_with_delta_pip`` and cached by Ivy; later
starts take the resolved files from a list and skip Ivy) and the ``hadoop-azure`` jar so
``abfss://`` paths resolve. Its JVM maps a class-data archive once one is recorded (:func:`class_archive`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "get_spark",
    "get_dbutils",
    "is_databricks",
    "hadoop_version",
    "local_home",
    "secret_env_name",
    "LocalDbutils",
    "NotebookExit",
    "LOCAL_SPARK_CONF",
    "JOB_SPARK_CONF",
    "class_archive",
    "recording_class_archive",
    "REDACTION_REGEX",
]

_log = logging.getLogger(__name__)

#: Environment variable naming the Spark master for local runs (default ``local[*]``).
ENV_MASTER = "DIABETES_SPARK_MASTER"
#: Environment variable naming the folder of the local JVM's class-data archive and of the list of
#: jars Ivy resolved (default ``$XDG_CACHE_HOME/diabetes-spark``, else ``~/.cache/diabetes-spark``);
#: ``off``: neither, every start resolves the jars and loads the classes.
ENV_JVM_CACHE = "DIABETES_SPARK_JVM_CACHE"
#: Set by :func:`recording_class_archive` for the session it starts: the archive file to record into.
_ENV_RECORD = "DIABETES_SPARK_JVM_RECORD"
#: JVM options with any class-data archive: a missing or stale archive only means a slower start, so
#: the JVM's notes about it (printed on stdout, where the CLI's JSON goes) are turned off.
_QUIET_CDS = "-Xlog:cds*=off"
#: Environment variable naming the local workspace folder (default ``./lakehouse``): the MLflow
#: SQLite store and artifacts live there, and the demo's tables.
ENV_HOME = "DIABETES_SPARK_HOME"

#: Spark's default redaction pattern, extended so Azure storage secrets never show in the UI, the
#: event log (History Server) or ``spark.conf`` dumps. Spark hides a setting's value when the pattern
#: matches its key *or* its value, so both sides are covered. Keys: the ADLS account key
#: ``fs.azure.account.key.<account>.dfs.core.windows.net`` (also as ``spark.hadoop.fs.azure...``),
#: ``fs.azure.sas.*``, and the Azure CLI's ``AZURE_STORAGE_KEY``, ``..._SAS_TOKEN`` and
#: ``..._CONNECTION_STRING`` handed to executors as ``spark.executorEnv.*`` (words joined by ``_``,
#: ``.`` or ``-``). Values, under any key: a connection string's ``AccountKey=``,
#: ``SharedAccessKey=`` or ``InstrumentationKey=``, a SAS token's signature ``sig=``. A bare ``sas``
#: would also hide harmless settings (``...retries.on.sasl``) and any value with those letters, so
#: SAS settings are matched by their shapes.
REDACTION_REGEX = (
    r"(?i)secret|password|token|access[._-]?key|account[._-]?key|storage[._-]?key|instrumentation[._-]?key"
    r"|[.]sas[.]|sas[._-]?(key|token)|sig=|connection[._-]?string"
)

#: Settings the jobs need on any cluster (also in the job clusters' ``spark_conf``, ``resources/``).
#: Validation and scoring make one wide expression per row; whole-stage codegen turns it into a Java
#: method HotSpot will not JIT past 8000 bytes of bytecode, and the stage then runs interpreted (4-5x
#: slower). At Spark's recommended HotSpot limit such a stage falls back to split, compiled code.
#: Timestamps (``scored_at``) are written as Parquet's standard INT64 microseconds rather than the
#: legacy INT96, which costs a Julian-day conversion per row (about 13% of a 1e7-row predictions write).
JOB_SPARK_CONF: Mapping[str, str] = {
    "spark.sql.codegen.hugeMethodLimit": "8000",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}

LOCAL_SPARK_CONF: Mapping[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "4g",
    "spark.redaction.regex": REDACTION_REGEX,
    # Delta rebuilds table state with 50 tasks by default: on a few local cores that dominates small writes.
    "spark.databricks.delta.snapshotPartitions": str(max(2, os.cpu_count() or 2)),
    **JOB_SPARK_CONF,
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
    # Python workers must run this interpreter (with its packages), not whatever python3 is on PATH;
    # pyspark reads the worker executable from the environment when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = {**LOCAL_SPARK_CONF, **(conf or {})}
    archive_options = _class_archive_options()
    if archive_options:
        given = settings.get("spark.driver.extraJavaOptions", "")
        settings["spark.driver.extraJavaOptions"] = f"{given} {archive_options}".strip()
    for key, value in settings.items():
        builder = builder.config(key, value)
    jars = None if {"spark.jars", "spark.jars.packages"} & settings.keys() else _resolved_jars()
    if jars:  # resolved by an earlier start: Ivy need not resolve them again
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        azure = f"org.apache.hadoop:hadoop-azure:{hadoop_version()}"
        builder = configure_spark_with_delta_pip(builder, extra_packages=[azure])
    _log.info("starting local Spark with Delta (first start downloads jars from Maven Central)")
    spark = builder.getOrCreate()
    if jars is None:
        _remember_jars(spark.conf.get("spark.jars", ""))
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _java() -> str | None:
    """The java that ``spark-submit`` starts: ``$JAVA_HOME/bin/java``, else the one on ``PATH``."""
    import shutil

    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java and os.path.isfile(java) else None


def class_archive() -> Path | None:
    """The class-data archive file of this installation (it may not exist yet), or ``None`` when off.

    A local Spark start spends most of its time loading and verifying some 10,000 JVM classes. An
    archive of them (the JVM's own AppCDS, ``-XX:SharedArchiveFile``) is mapped instead, which cuts
    the start and the first queries by several seconds. It is only valid for the same java and the
    same jars, so its name is a digest of them: an upgrade gets a new archive. The archive is
    recorded once, by the first ``diabetes-spark`` command run locally (:func:`recording_class_archive`).
    """
    import hashlib
    from importlib import metadata

    import pyspark

    folder, java = _jvm_cache(), _java()
    if folder is None or java is None:
        return None
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    parts = [java, str(os.stat(java).st_mtime_ns), pyspark.__version__, metadata.version("delta-spark"), *sorted(os.listdir(jars))]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return folder / f"jvm-classes-{digest}.jsa"


def _jvm_cache() -> Path | None:
    """The folder of the class-data archive and the jar list (:data:`ENV_JVM_CACHE`), ``None`` when off."""
    folder = os.environ.get(ENV_JVM_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "diabetes-spark"
    )
    return None if folder == "off" else Path(folder)


def _jar_list() -> Path | None:
    """Where the jars Ivy resolved for Delta and ``hadoop-azure`` are listed, or ``None`` when off."""
    from importlib import metadata

    folder = _jvm_cache()
    return None if folder is None else folder / f"jars-delta-{metadata.version('delta-spark')}-hadoop-{hadoop_version()}.txt"


def _resolved_jars() -> list[str] | None:
    """The jar files an earlier start resolved, when every one of them is still there."""
    listing = _jar_list()
    if listing is None or not listing.is_file():
        return None
    jars = listing.read_text(encoding="utf-8").split()
    return jars if jars and all(os.path.isfile(jar) for jar in jars) else None


def _remember_jars(resolved: str) -> None:
    """Keep the list of jars Ivy just resolved (``spark.jars``: ``file:`` URIs) for later starts."""
    from urllib.parse import unquote, urlparse

    listing = _jar_list()
    jars = [unquote(urlparse(uri).path) for uri in resolved.split(",") if uri.startswith("file:")]
    if listing is None or not jars:
        return
    listing.parent.mkdir(parents=True, exist_ok=True)
    partial = listing.with_name(f"{listing.name}.{os.getpid()}.partial")
    partial.write_text("\n".join(jars) + "\n", encoding="utf-8")
    os.replace(partial, listing)


def _class_archive_options() -> str:
    """The JVM options for the class-data archive: record it, map it, or none."""
    recording = os.environ.get(_ENV_RECORD)
    if recording:
        return f"-XX:ArchiveClassesAtExit={recording} {_QUIET_CDS}"
    archive = class_archive()
    if archive is None or not archive.is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} {_QUIET_CDS}"


@contextmanager
def recording_class_archive() -> Iterator[None]:
    """Record the class-data archive (:func:`class_archive`) from a local session started in the block.

    Nothing happens on Databricks, with the archive off or already there, or when a session is
    already running. Otherwise the JVM the block starts writes the classes it loaded to a file of
    its own when it exits; on leaving the block that JVM is stopped and waited for (the session is
    unusable afterwards), and only a complete archive, from a JVM that exited cleanly, is moved into
    place atomically. The JVM refuses an archive made by another java or for other jars; a partial
    one could crash it, so it is never put in place.
    """
    from pyspark.sql import SparkSession

    target = class_archive()
    if is_databricks() or target is None or target.exists() or SparkSession.getActiveSession() is not None:
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    os.environ[_ENV_RECORD] = str(partial)
    try:
        yield
    finally:
        del os.environ[_ENV_RECORD]
        _finish_recording(partial, target)


def _finish_recording(partial: Path, target: Path) -> None:
    """Stop the JVM this process started (it writes ``partial`` as it exits); keep a complete archive."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if process is None:  # no JVM was started: nothing was recorded
        partial.unlink(missing_ok=True)
        return
    _log.warning("recording the JVM's class-data archive %s (once; later local starts are faster)", target)
    context = SparkContext._active_spark_context
    if context is not None:
        context.stop()
    gateway.shutdown()
    if process.stdin is not None:
        process.stdin.close()  # the JVM exits when its stdin closes (PythonGatewayServer)
    try:
        code = process.wait(timeout=600)
    except Exception:  # still writing after ten minutes: leave it, keep nothing
        code = None
    if code == 0 and partial.is_file() and partial.stat().st_size > 0:
        os.replace(partial, target)
    else:
        _log.warning("the JVM exited with %s: no class-data archive recorded", code)
        partial.unlink(missing_ok=True)


#: Local secrets: ``DIABETES_SPARK_SECRET__<SCOPE>__<KEY>``, scope and key upper-cased with every
#: character outside A-Z and 0-9 turned into ``_`` (scope ``diabetes-spark``, key ``adls-account-key``
#: -> ``DIABETES_SPARK_SECRET__DIABETES_SPARK__ADLS_ACCOUNT_KEY``).
SECRET_ENV_PREFIX = "DIABETES_SPARK_SECRET__"


def secret_env_name(scope: str, key: str) -> str:
    """The environment variable that holds secret ``key`` of ``scope`` off Databricks."""

    def norm(text: str) -> str:
        return re.sub(r"[^A-Z0-9]", "_", text.upper())

    return f"{SECRET_ENV_PREFIX}{norm(scope)}__{norm(key)}"


class NotebookExit(Exception):
    """Raised by ``dbutils.notebook.exit`` to stop a notebook with a value, as on Databricks."""

    def __init__(self, value: str) -> None:
        super().__init__("notebook exited")
        self.value = value


class _Widgets:
    """``dbutils.widgets``: declared text widgets with defaults, overridable by the runner."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.declared: dict[str, str] = {}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:  # noqa: N803 - Databricks' name
        self.declared[name] = defaultValue

    def get(self, name: str) -> str:
        if name not in self.declared:
            raise ValueError(f"widget {name!r} is not declared; declared: {sorted(self.declared)}")
        return self._values.get(name, self.declared[name])

    getArgument = get  # noqa: N815 - Databricks' name

    def removeAll(self) -> None:  # noqa: N802 - Databricks' name
        self.declared.clear()


class _SecretMetadata:
    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SecretMetadata(key='{self.key}')"


class _Secrets:
    """``dbutils.secrets`` backed by environment variables (see :func:`secret_env_name`)."""

    def get(self, scope: str, key: str) -> str:
        name = secret_env_name(scope, key)
        value = os.environ.get(name)
        if value is None:
            raise KeyError(f"secret {key!r} does not exist in scope {scope!r} (locally: set environment variable {name})")
        return value

    def list(self, scope: str) -> list[_SecretMetadata]:
        prefix = secret_env_name(scope, "")
        return [_SecretMetadata(k[len(prefix) :].lower().replace("_", "-")) for k in sorted(os.environ) if k.startswith(prefix)]

    def listScopes(self) -> list[str]:  # noqa: N802 - Databricks' name
        return sorted({k[len(SECRET_ENV_PREFIX) :].split("__")[0].lower() for k in os.environ if k.startswith(SECRET_ENV_PREFIX)})


class _Fs:
    """``dbutils.fs`` basics on the local file system (``dbfs:/`` and ``file:`` prefixes accepted)."""

    @staticmethod
    def _local(path: str) -> Path:
        return Path(re.sub(r"^(dbfs:|file:)", "", path))

    def ls(self, path: str) -> list[str]:
        return sorted(str(p) for p in self._local(path).iterdir())

    def mkdirs(self, path: str) -> bool:
        self._local(path).mkdir(parents=True, exist_ok=True)
        return True

    def put(self, path: str, contents: str, overwrite: bool = False) -> bool:
        target = self._local(path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(contents, encoding="utf-8")
        return True

    def head(self, path: str, maxBytes: int = 65536) -> str:  # noqa: N803 - Databricks' name
        with open(self._local(path), encoding="utf-8") as f:
            return f.read(maxBytes)

    def rm(self, path: str, recurse: bool = False) -> bool:
        import shutil

        target = self._local(path)
        if target.is_dir():
            if not recurse:
                raise IsADirectoryError(f"{path} is a directory; pass recurse=True")
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        return True


class _Notebook:
    def exit(self, value: str) -> None:
        raise NotebookExit(value)


class _Library:
    def restartPython(self) -> None:  # noqa: N802 - Databricks' name
        """Nothing to restart locally: the package is installed in this interpreter already."""


class LocalDbutils:
    """A stand-in for Databricks' ``dbutils`` so notebooks run unchanged off Databricks.

    Args:
        widgets: Widget values that override the defaults the notebook declares.
    """

    def __init__(self, widgets: Mapping[str, str] | None = None) -> None:
        self.widgets = _Widgets(widgets or {})
        self.secrets = _Secrets()
        self.fs = _Fs()
        self.notebook = _Notebook()
        self.library = _Library()


def get_dbutils(spark: Any, widgets: Mapping[str, str] | None = None) -> Any:
    """Databricks' own ``dbutils`` on Databricks, else a :class:`LocalDbutils` with ``widgets``."""
    if is_databricks():
        from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]

        return DBUtils(spark)
    return LocalDbutils(widgets)


#: Loggers that echo call arguments: py4j logs every command it sends to the JVM at DEBUG, so
#: ``spark.conf.set(<account key conf>, <key>)`` would print the key with the root logger at DEBUG.
ECHOING_LOGGERS = ("py4j", "py4j.clientserver", "py4j.java_gateway")


class _SecretLogFilter(logging.Filter):
    """Replaces registered secrets (and their URL-encoded and base64 forms) in log records."""

    def __init__(self) -> None:
        from diabetes_spark._telemetry_config import Redactor

        super().__init__()
        self.redactor = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's business, not ours
            return True
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_SECRET_LOG_FILTER: _SecretLogFilter | None = None


def hide_in_logs(*secrets: str) -> None:
    """Redact ``secrets`` from the records of :data:`ECHOING_LOGGERS` from now on, in this process.

    Call it before the secret is handed to Spark: the py4j command carrying it is logged then.
    """
    global _SECRET_LOG_FILTER
    if _SECRET_LOG_FILTER is None:
        _SECRET_LOG_FILTER = _SecretLogFilter()
    _SECRET_LOG_FILTER.redactor.add(secrets)
    for name in ECHOING_LOGGERS:
        logger = logging.getLogger(name)
        if _SECRET_LOG_FILTER not in logger.filters:
            logger.addFilter(_SECRET_LOG_FILTER)
