"""Where an incremental scoring run keeps its position, and what a micro-batch covers: the streaming
checkpoint's folder, its query id (the Delta application id of the batch writes) and the input
versions of a micro-batch, read from the checkpoint's own offset log.

The position itself is Structured Streaming's (the offset and commit logs): nothing here writes it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from diabetes_spark import storage
from diabetes_spark.errors import ParamError
from diabetes_spark.runtime import is_databricks

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from diabetes_spark.storage import TableRef

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
