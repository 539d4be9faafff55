"""Delta writes in one commit: retried while concurrent commits conflict, counted from the commit.

:func:`write_delta` tags its commit, so its own row count is read from that commit's metrics
(no extra pass over the data) and a retry never repeats a write that landed.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import TYPE_CHECKING, Literal

from diabetes_spark.errors import InputError, SchemaError, WriteConflictError, error_condition, one_line
from diabetes_spark.storage import TableRef, history, table_exists

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pyspark.sql import DataFrame, SparkSession


_log = logging.getLogger(__name__)

#: Tries of one Delta write when concurrent commits conflict with it (see :func:`write_delta`).
WRITE_ATTEMPTS = 5
#: First backoff ceiling between tries, doubled each time and jittered.
WRITE_BACKOFF_SECONDS = 0.5
#: Latest commits searched for a write's own commit before the whole history is.
HISTORY_WINDOW = 20

#: Delta's refusals of a frame's columns (Delta checks them before it commits anything): names it
#: cannot store without column mapping, columns or types that do not match the existing table.
_DELTA_COLUMN_ERRORS = (
    "DELTA_INVALID_CHARACTERS_IN_COLUMN_NAME",
    "DELTA_METADATA_MISMATCH",
    "DELTA_FAILED_TO_MERGE_FIELDS",
)


#: Delta's error classes for a commit refused because of a concurrent one: nothing of it landed.
#: Read from the exception, they work on every Delta version and over Spark Connect, where Delta's
#: own Python exception types are absent (3.x ships them differently, 4.0.0 not at all) or cannot load.
CONFLICTS = frozenset(
    {
        "DELTA_CONCURRENT_APPEND",
        "DELTA_CONCURRENT_DELETE_READ",
        "DELTA_CONCURRENT_DELETE_DELETE",
        "DELTA_CONCURRENT_TRANSACTION",
        "DELTA_CONCURRENT_WRITE",
        "DELTA_METADATA_CHANGED",
        "DELTA_PROTOCOL_CHANGED",
    }
)


def _commit_metrics(spark: SparkSession, ref: TableRef, tag: str, *, prefix: bool = False) -> dict[str, str] | None:
    """The operation metrics of the commit tagged ``tag`` (with ``prefix``: the latest tagged
    ``tag...``), or ``None`` when there is none.

    The last :data:`HISTORY_WINDOW` commits are searched first (cheap); the whole history only
    when other writers committed more than that since.
    """
    for commits in (history(spark, ref, limit=HISTORY_WINDOW), history(spark, ref)):
        match = f"startswith(userMetadata, '{tag}')" if prefix else f"userMetadata = '{tag}'"
        row = commits.filter(match).select("operationMetrics").first()
        if row is not None:
            return dict(row[0] or {})
    return None


def _backoff(attempt: int) -> float:
    """Full-jitter exponential backoff: concurrent losers spread out instead of colliding again."""
    return random.uniform(0.0, WRITE_BACKOFF_SECONDS * 2 ** (attempt - 1))


def _save(df: DataFrame, ref: TableRef, options: dict[str, str], mode: str, partition_by: Sequence[str] = ()) -> None:
    """Write ``df`` into ``ref`` once; Delta refusing the columns is a :class:`SchemaError`.

    ``partition_by`` applies only when this write creates the table: a write into an existing table
    names no partition columns, so Delta keeps the table's own layout, partitioned or not.

    Raises:
        SchemaError: Delta refused the frame's column names or its schema (nothing was committed).
    """
    from pyspark.errors import AnalysisException

    writer = df.write.format("delta").mode(mode).options(**options)
    if partition_by and not table_exists(df.sparkSession, ref):
        writer = writer.partitionBy(*partition_by)
    try:
        if ref.kind == "table":
            writer.saveAsTable(ref.identifier)
        else:
            writer.save(ref.location)
    except AnalysisException as e:
        if not error_condition(e).startswith(_DELTA_COLUMN_ERRORS):
            raise
        raise SchemaError(
            f"Delta table {ref.location} refused the columns to write: {one_line(e)} "
            "Rename the input's columns (Delta allows no ' ,;{}()=', tab or newline in a name unless the table "
            "uses column mapping), or write to a table whose columns match."
        ) from e


def _save_retrying(
    df: DataFrame, ref: TableRef, options: dict[str, str], mode: str, tries: int, partition_by: Sequence[str] = ()
) -> None:
    """Save, and save again while Delta refuses the commit for a concurrent one (see :func:`write_delta`)."""
    for attempt in range(1, tries + 1):
        try:
            _save(df, ref, options, mode, partition_by=partition_by)
            return
        except Exception as error:
            condition = error_condition(error).split(".")[0]  # the class, without its sub-condition
            if condition not in CONFLICTS:
                raise
            if _commit_metrics(df.sparkSession, ref, options["userMetadata"]) is not None:
                return  # our own commit, reported as taken (e.g. a retried cloud-store request): it landed
            conflict = f"{condition}: {one_line(error, 300)}"
            if attempt == tries:
                raise WriteConflictError(
                    f"writing to {ref.location} conflicted with concurrent writers on every attempt ({tries}; "
                    f"last: {conflict}); nothing of this write was committed. Rerun the job (rewriting a "
                    "batch is idempotent), or schedule the writers of this table so they do not overlap."
                ) from error
            delay = _backoff(attempt)
            _log.warning(
                "write to %s conflicted with a concurrent commit (%s); retrying in %.2f s (attempt %d of %d)",
                ref.location,
                conflict,
                delay,
                attempt + 1,
                tries,
            )
            time.sleep(delay)


def write_delta(
    df: DataFrame,
    ref: TableRef,
    *,
    mode: Literal["append", "overwrite"] = "append",
    replace_where: str | None = None,
    merge_schema: bool = False,
    expected_rows: int | None = None,
    table_properties: Mapping[str, str] | None = None,
    partition_by: Sequence[str] = (),
    attempts: int = WRITE_ATTEMPTS,
    once_as: str = "",
    once_version: int = 1,
) -> int:
    """Write ``df`` to a Delta table in one commit and return the rows that commit wrote.

    ``replace_where`` (with ``mode="overwrite"``) atomically replaces only the rows matching the
    predicate. ``merge_schema`` lets new columns (e.g. a new pass-through id) extend the table.
    ``expected_rows=0`` tells that ``df`` is known to be empty, where Delta may make no commit.
    ``table_properties`` (``delta.*``) and ``partition_by`` (partition columns) are set when this
    write creates the table; an existing table keeps its own. A ``replace_where`` on partition
    columns only is a metadata change (no scan of the old rows), and concurrent writers replacing
    different partitions do not conflict.
    The row count is read from the commit's own metrics (found by a unique commit tag, however
    many other writers committed since), so counting costs no extra pass over the data.

    ``once_as`` (an application id) makes the write idempotent with Delta's own ``txnAppId`` and
    ``txnVersion``: a second write of that id to the table commits nothing, and the rows the first
    one wrote are returned. A rerun of a job that failed between two tables then completes the
    second one without doubling the first. ``once_version`` is the ``txnVersion``: a writer that
    keeps one application id over many writes (a streaming query, one version per micro-batch)
    gives each its own; Delta skips any write whose version is not above the last one committed.

    Concurrent writers: Delta commits optimistically and refuses a commit that conflicts with one
    made since the write began (two first writers to an empty location, a ``replaceWhere`` whose
    rows another writer touched, a schema change). A refused commit wrote nothing, so the whole
    write is tried again, up to ``attempts`` times with jittered backoff, each retry logged. That
    is safe in every mode, appends included: the refused attempt added no rows, and before each
    retry the history is checked for this write's tag, so a write that did land is never repeated.
    Other failures (a task error, a lost connection, where a commit may or may not have landed)
    are not retried here: the job fails, and its rerun of the batch replaces what it wrote.

    Raises:
        InputError: ``ref`` is a CSV or Parquet file.
        WriteConflictError: Every attempt conflicted; nothing of this write was committed.
        SchemaError: Delta refused the columns (invalid names, a mismatch with the table); nothing
            was committed.
    """
    if ref.kind in ("csv", "parquet"):
        raise InputError(f"cannot write Delta to the {ref.kind} file {ref.location}; give a Delta path or table name")
    ident = once_as if once_version == 1 else f"{once_as}@{once_version}"
    prefix = f"diabetes-spark:{ident}:" if once_as else "diabetes-spark:"
    tag = f"{prefix}{uuid.uuid4()}"
    options = {"userMetadata": tag}
    if once_as:
        options.update({"txnAppId": once_as, "txnVersion": str(once_version)})
    if replace_where is not None:
        options["replaceWhere"] = replace_where
    if merge_schema:
        options["mergeSchema"] = "true"
    options.update(table_properties or {})
    _save_retrying(df, ref, options, mode, attempts, partition_by)
    metrics = _commit_metrics(df.sparkSession, ref, tag)
    if metrics is None and once_as:  # Delta skipped it: written before, under the same application id
        metrics = _commit_metrics(df.sparkSession, ref, prefix, prefix=True)
    if metrics is None:
        if expected_rows == 0:
            return 0  # Delta makes no commit for an empty overwrite that changes nothing
        raise RuntimeError(f"the commit just written to {ref.location} is not in its history")  # a bug, not input
    # A replaceWhere on non-partition columns rewrites the other rows of touched files: not ours.
    return int(metrics.get("numOutputRows", "0")) - int(metrics.get("numCopiedRows", "0"))
