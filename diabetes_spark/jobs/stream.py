"""The streaming query of incremental scoring: where it keeps its position (the checkpoint's folder),
its id (the Delta application id of the batch writes), the input versions a micro-batch covers (read
from the checkpoint's own offset log), its start over the Delta source (changes or appends only), and
its failures a user can act on.

The position itself is Structured Streaming's (the offset and commit logs): nothing here writes it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from diabetes_spark import storage
from diabetes_spark.errors import ConfigurationError, InputError, ParamError, WriteConflictError, one_line
from diabetes_spark.runtime import is_connect, is_databricks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.storage import TableRef

_log = logging.getLogger(__name__)

#: Delta's refusals of a streamed commit that changed or deleted rows.
_CHANGED_ROWS = ("DELTA_SOURCE_TABLE_IGNORE_CHANGES", "DELTA_SOURCE_IGNORE_DELETE")
#: Spark's refusals of a second run of the same query (same process, or the checkpoint's offset log).
_CONCURRENT = ("already active", "concurrently using", "CONCURRENT_STREAM_LOG_UPDATE", "CONCURRENT_QUERY")

#: Suffix of the default checkpoint folder beside a Delta path output (``<output>_checkpoint``).
CHECKPOINT_SUFFIX = "_checkpoint"
#: Delta's offset index meaning "before the first file of the version" (DeltaSourceOffset.BASE_INDEX).
_BASE_INDEX = -1
#: Indexes at or above this mark the end of a version (Delta's END_INDEX and metadata sentinels).
_END_INDEX = 2**62


def location(spark: SparkSession, given: str, output: TableRef) -> str:
    """The checkpoint folder: ``given``, else beside the output (``<output>_checkpoint`` for a Delta
    path; for a catalog table, in the session's warehouse folder off Databricks).

    Raises:
        ParamError: A catalog table output on Databricks without ``checkpoint_location`` (it belongs
            in a Unity Catalog volume, which only the deployment knows).
    """
    if given.strip():
        return given.strip()
    if output.kind == "delta":
        return output.location.rstrip("/") + CHECKPOINT_SUFFIX
    if is_databricks():
        raise ParamError(
            f"incremental scoring into the catalog table {output.location} needs checkpoint_location: a folder in a "
            "Unity Catalog volume, e.g. /Volumes/<catalog>/<schema>/<volume>/checkpoints/<table> (the bundle sets it)"
        )
    warehouse = spark.conf.get("spark.sql.warehouse.dir") or "spark-warehouse"
    return f"{warehouse.rstrip('/')}/{output.location.replace('.', '_')}{CHECKPOINT_SUFFIX}"


def _lines(spark: SparkSession, path: str) -> list[str]:
    """The lines of a small text file of the checkpoint, read through Spark (its file system, any scheme)."""
    return [row[0] for row in spark.read.text(storage.literal(path)).collect()]


def query_id(spark: SparkSession, checkpoint: str) -> str:
    """The id of the streaming query that owns ``checkpoint`` (its ``metadata`` file). A new
    checkpoint is a new query: its writes can never be mistaken for an earlier checkpoint's."""
    return str(json.loads("".join(_lines(spark, f"{checkpoint.rstrip('/')}/metadata")))["id"])


def _offset(spark: SparkSession, checkpoint: str, epoch: int) -> dict[str, Any] | None:
    """The Delta source offset the micro-batch ``epoch`` ends at (``None`` before the first)."""
    if epoch < 0:
        return None
    lines = _lines(spark, f"{checkpoint.rstrip('/')}/offsets/{epoch}")
    # Line 1 is the log's version (v1), line 2 the batch's metadata, then one offset per source.
    return dict(json.loads(lines[2]))


def covered_versions(start: dict[str, Any] | None, end: dict[str, Any]) -> tuple[int, int]:
    """The first and last input versions a micro-batch from offset ``start`` to ``end`` reads rows of.

    A Delta offset is ``(reservoirVersion, index, isStartingVersion)``: within the first snapshot
    (which holds versions 0 to ``reservoirVersion``), or at file ``index`` of a version's commit.
    """
    last = end["reservoirVersion"]
    if not end.get("isStartingVersion") and end["index"] == _BASE_INDEX:
        last -= 1  # nothing of that version yet
    if start is None or start.get("isStartingVersion"):
        return 0, last
    first = start["reservoirVersion"]
    if start["index"] >= _END_INDEX:
        first += 1  # the start's version was read whole
    return first, max(first, last)


def batch_id(spark: SparkSession, checkpoint: str, source: TableRef, epoch: int) -> str:
    """The id of micro-batch ``epoch``: the input's name, the versions it covers and the epoch
    (``scoring-v3-v5.2``). The same epoch rerun after a failure covers the same versions, so it
    gets the same id; the epoch keeps apart two batches that each read part of one large commit."""
    first, last = covered_versions(_offset(spark, checkpoint, epoch - 1), _offset(spark, checkpoint, epoch) or {})
    name = re.sub(r"[^A-Za-z0-9._-]", "_", source.location.rstrip("/").rsplit("/", 1)[-1])[:80] or "input"
    return f"{name}-v{first}-v{last}.{epoch}"


def change_feed(spark: SparkSession, source: TableRef) -> bool:
    """Whether the input's change data feed is on (``delta.enableChangeDataFeed``)."""
    rows = spark.sql(f"SHOW TBLPROPERTIES {source.identifier}").collect()
    return any(r[0] == "delta.enableChangeDataFeed" and str(r[1]).lower() == "true" for r in rows)


def check_workers(spark: SparkSession) -> None:
    """Over Spark Connect the micro-batches run in the server's Python workers: fail at the start,
    naming it, where those cannot import this package."""
    if not is_connect(spark):
        return
    from pyspark.sql import functions as F

    def version() -> str:  # no hints: PySpark would read them as a pandas UDF signature
        try:
            from diabetes_spark import __version__
        except ImportError as e:
            return f"missing: {e}"
        return str(__version__)

    from diabetes_spark import __version__

    (found,) = spark.range(1).select(F.udf(version, "string")()).first() or ("",)
    if found != __version__:
        raise ConfigurationError(
            f"incremental scoring over Spark Connect runs each micro-batch (foreachBatch) in the server's Python "
            f"workers, which have diabetes_spark {found!r}, not {__version__}: install this wheel where the server "
            "runs Python (a serverless job's environment, a cluster library), or score without incremental"
        )


@contextmanager
def one_run_at_a_time(spark: SparkSession) -> Iterator[None]:
    """For the block, a second run of a checkpoint in the same Spark fails at its start instead of
    stopping the run already going (Spark's default); the session's setting is put back after."""
    key = "spark.sql.streaming.stopActiveRunOnRestart"
    try:
        saved = spark.conf.get(key, None)
        spark.conf.set(key, "false")
    except Exception as e:  # compute that refuses the setting (serverless) runs one query per job run
        _log.debug("%s not set: %s", key, one_line(e, 200))
        yield
        return
    try:
        yield
    finally:
        if saved is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, saved)


def start(
    spark: SparkSession,
    source: TableRef,
    *,
    checkpoint: str,
    change_feed: bool,
    name: str,
    function: Callable[[DataFrame, int], None],
) -> Any:
    """The streaming query over the input, started: every micro-batch to ``function``, until what
    is available now has been processed."""
    reader = spark.readStream.format("delta")
    if change_feed:
        reader = reader.option("readChangeFeed", "true")
    stream = reader.table(source.location) if source.kind == "table" else reader.load(source.location)
    writer = stream.writeStream.foreachBatch(function).option("checkpointLocation", checkpoint)
    return writer.trigger(availableNow=True).queryName(name).start()


def raise_known(error: Exception, source: TableRef, output: TableRef, checkpoint: str) -> None:
    """Raise the error a user can act on for a failed start or stream of incremental scoring from
    ``source`` into ``output``; return for any other."""
    text = str(error)
    if any(mark in text for mark in _CHANGED_ROWS):
        raise InputError(
            f"input {source} has a commit that updated or deleted rows, and its change data feed is off, so "
            "incremental scoring cannot tell which rows changed: turn it on (ALTER TABLE ... SET TBLPROPERTIES "
            "(delta.enableChangeDataFeed = true)) to score updated rows again, or score the whole table without "
            "incremental. (Delta's skipChangeCommits would skip such rows silently; this job does not use it.) "
            "Nothing of that commit was scored"
        ) from error
    if any(mark in text for mark in _CONCURRENT):
        raise WriteConflictError(
            f"another incremental run into {output} is active (checkpoint {checkpoint}): this run stopped, having scored "
            "nothing twice; run it again after that one ends, and it scores what that one left"
        ) from error
    for name in ("RejectThresholdError", "ReconciliationError", "SchemaError", "OutputError", "RegistryError"):
        marker = f"diabetes_spark.errors.{name}: "
        if marker in text:  # a micro-batch over Spark Connect raised one of ours, in the server's worker
            from diabetes_spark import errors

            raise getattr(errors, name)(text.split(marker, 1)[1].splitlines()[0]) from error
