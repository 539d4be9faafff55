"""Local-only start-up cache of the JVM: the jar list Ivy resolved and a class-data archive.

A first local start resolves the Delta and ``hadoop-azure`` jars with Ivy; their files are listed
here so later starts skip the resolution. The first ``diabetes-spark`` command also records the
classes its JVM loaded (AppCDS), which later local starts map instead of loading them again. Both
are keyed by the java, pyspark and jar versions, so an upgrade gets its own. Never on Databricks.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diabetes_spark.errors import ConfigurationError
from diabetes_spark.runtime import hadoop_version, is_databricks

_log = logging.getLogger(__name__)

#: Environment variable naming the folder of the class-data archive and of the jar list (default
#: ``$XDG_CACHE_HOME/diabetes-spark``, else ``~/.cache/diabetes-spark``); ``off``: neither.
ENV_JVM_CACHE = "DIABETES_SPARK_JVM_CACHE"
#: JVM option with any class-data archive: a missing or stale archive only means a slower start, so
#: the JVM's notes about it (printed on stdout, where the CLI's JSON goes) are turned off.
QUIET_CDS = "-Xlog:cds*=off"
#: The most seconds a command's exit waits for its JVM to finish writing the class-data archive.
ARCHIVE_WAIT_SECONDS = 30


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

    folder, java = cache_folder(), _java()
    if folder is None or java is None:
        return None
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    parts = [
        java,
        str(os.stat(java).st_mtime_ns),
        pyspark.__version__,
        metadata.version("delta-spark"),
        *sorted(os.listdir(jars)),
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return folder / f"jvm-classes-{digest}.jsa"


def cache_folder() -> Path | None:
    """The folder of the class-data archive and the jar list (:data:`ENV_JVM_CACHE`), ``None`` when off."""
    folder = os.environ.get(ENV_JVM_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "diabetes-spark"
    )
    return None if folder == "off" else Path(folder)


def jar_list() -> Path | None:
    """Where the jars Ivy resolved for Delta and ``hadoop-azure`` are listed, or ``None`` when off."""
    from importlib import metadata

    folder = cache_folder()
    return (
        None
        if folder is None
        else folder / f"jars-delta-{metadata.version('delta-spark')}-hadoop-{hadoop_version()}.txt"
    )


def resolved_jars() -> list[str] | None:
    """The jar files an earlier start resolved, when every one of them is still there."""
    listing = jar_list()
    if listing is None or not listing.is_file():
        return None
    jars = listing.read_text(encoding="utf-8").split()
    return jars if jars and all(os.path.isfile(jar) for jar in jars) else None


def remember_jars(resolved: str) -> list[str]:
    """Keep the list of jars Ivy just resolved (``spark.jars``: ``file:`` URIs) for later starts;
    returns their paths."""
    from urllib.parse import unquote, urlparse

    listing = jar_list()
    jars = [unquote(urlparse(uri).path) for uri in resolved.split(",") if uri.startswith("file:")]
    if listing is None or not jars:
        return jars
    listing.parent.mkdir(parents=True, exist_ok=True)
    partial = listing.with_name(f"{listing.name}.{os.getpid()}.partial")
    partial.write_text("\n".join(jars) + "\n", encoding="utf-8")
    os.replace(partial, listing)
    return jars


#: Started in a child interpreter on a first start: Delta's own resolution of the jars, whose paths
#: it writes to the file named by its second argument.
_RESOLVER = """
import sys
from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession
builder = SparkSession.builder.master("local[1]").appName("diabetes-spark-jars").config("spark.ui.enabled", "false")
spark = configure_spark_with_delta_pip(builder, extra_packages=[sys.argv[1]]).getOrCreate()
with open(sys.argv[2], "w", encoding="utf-8") as out:
    out.write(spark.conf.get("spark.jars", ""))
spark.stop()
"""
#: Lines of Ivy's log shown when the resolution fails.
_LOG_TAIL = 25


def fetch_jars(extra_packages: list[str], *, timeout: float = 900.0) -> list[str]:
    """Resolve the Delta Lake jars and ``extra_packages`` quietly, once; returns the jar paths.

    Ivy prints hundreds of lines while it resolves (and, without a second package repository, a
    page of harmless "not found" lines). Here it runs in a child interpreter whose output goes to
    ``ivy-<jar list name>.log`` in the cache folder; the console gets one line, and the log is shown
    (its path and last lines) only when the resolution fails.

    Raises:
        ConfigurationError: The resolution failed (no network to Maven Central, a bad coordinate).
    """
    import sys
    import tempfile

    listing = jar_list()
    if listing is None:
        raise ValueError("the JVM cache is off: there is no folder to log the resolution in")
    listing.parent.mkdir(parents=True, exist_ok=True)
    log = listing.with_name(f"ivy-{listing.stem}.log")
    _log.info("fetching Delta Lake and hadoop-azure jars (first start only)")
    with tempfile.TemporaryDirectory() as folder, log.open("w", encoding="utf-8") as output:
        result = Path(folder) / "jars.txt"
        command = [sys.executable, "-c", _RESOLVER, ",".join(extra_packages), str(result)]
        try:
            code = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
        resolved = result.read_text(encoding="utf-8") if result.is_file() else ""
    if code != 0 or not resolved:
        lines = [
            line.rstrip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        ]
        unresolved = [line.strip() for line in lines if re.match(r"\s*:: \S+#\S+: ", line)]  # Ivy's summary of them
        tail = [*unresolved, *lines[-_LOG_TAIL:]]
        raise ConfigurationError(
            f"could not fetch the Delta Lake and hadoop-azure jars (exit code {code}); Ivy's log is {log}, "
            "ending:\n" + "\n".join(tail) + "\nCheck the network to Maven Central (or your proxy), then run again."
        )
    return remember_jars(resolved)


def archive_options() -> str:
    """The JVM options that map the class-data archive, when one is recorded ('' otherwise)."""
    archive = class_archive()
    if archive is None or not archive.is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} {QUIET_CDS}"


@contextmanager
def recording_class_archive() -> Iterator[dict[str, str]]:
    """Record the class-data archive (:func:`class_archive`) from a local session started in the block.

    Yields the Spark settings that make a new local JVM record it (pass them to
    :func:`diabetes_spark.session.get_spark`); empty on Databricks, with the archive off or already
    there, or when a session is already running. The JVM writes the classes it loaded to a file of
    its own as it exits: on leaving the block that JVM is stopped and waited for (the session is
    unusable afterwards), and only a complete archive, from a JVM that exited cleanly, is moved into
    place atomically. The JVM refuses an archive made by another java or for other jars; a partial
    one could crash it, so it is never put in place.
    """
    from pyspark.sql import SparkSession

    target = class_archive()
    if is_databricks() or target is None or target.exists() or SparkSession.getActiveSession() is not None:
        yield {}
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        yield {"spark.driver.extraJavaOptions": f"-XX:ArchiveClassesAtExit={partial} {QUIET_CDS}"}
    finally:
        _finish_recording(partial, target)


def _finish_recording(partial: Path, target: Path) -> None:
    """Stop the JVM this process started (it writes ``partial`` as it exits); keep a complete archive."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if gateway is None or process is None:  # no JVM was started: nothing was recorded
        partial.unlink(missing_ok=True)
        return
    _log.info("recording the JVM's class-data archive %s (once; later local starts are faster)", target)
    context = SparkContext._active_spark_context
    if context is not None:
        context.stop()
    gateway.shutdown()
    if process.stdin is not None:
        process.stdin.close()  # the JVM exits when its stdin closes (PythonGatewayServer)
    try:
        code = process.wait(timeout=ARCHIVE_WAIT_SECONDS)
    except subprocess.TimeoutExpired:  # the command's exit is not held longer: stop it, keep nothing
        process.kill()
        process.wait()
        code = None
    if code == 0 and partial.is_file() and partial.stat().st_size > 0:
        os.replace(partial, target)
    else:
        _log.warning("the JVM exited with %s: no class-data archive recorded", code)
        partial.unlink(missing_ok=True)
