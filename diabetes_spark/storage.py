"""Table references, ADLS Gen2 credentials, and Delta reads/writes.

A table reference is one of:

* a ``.csv`` or ``.parquet`` file (or folder), any scheme;
* a Delta location: ``abfss://``, ``dbfs:/``, ``file:/`` or another URI, an absolute or relative path;
* ``sample:<name>``, a sample file shipped in the wheel (see :mod:`diabetes_spark.data`);
* a catalog table name, ``schema.table`` or ``catalog.schema.table`` (Unity Catalog on Databricks,
  the session catalog locally).

A relative path is resolved against ``base`` when one is given (e.g. the ADLS container root).
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diabetes_spark.data import SAMPLE_PREFIX, sample_path
from diabetes_spark.errors import InputError, SchemaError, WriteConflictError
from diabetes_spark.schemas import CORRUPT_RECORD, check_column_names

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "TableRef",
    "resolve",
    "abfss_uri",
    "adls_conf_key",
    "configure_adls",
    "read_table",
    "write_delta",
    "delta_version",
    "table_exists",
    "holds_rows",
    "input_fingerprint",
    "WRITE_ATTEMPTS",
]

_log = logging.getLogger(__name__)

#: Tries of one Delta write when concurrent commits conflict with it (see :func:`write_delta`).
WRITE_ATTEMPTS = 5
#: First backoff ceiling between tries, doubled each time and jittered.
WRITE_BACKOFF_SECONDS = 0.5
#: Latest commits searched for a write's own commit before the whole history is.
HISTORY_WINDOW = 20

Kind = Literal["delta", "table", "csv", "parquet"]
_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w-]*){1,2}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class TableRef:
    """A resolved table reference: what kind of thing it is and where."""

    kind: Kind
    location: str

    def __str__(self) -> str:
        return self.location

    def sibling(self, suffix: str) -> TableRef:
        """The reference with ``suffix`` appended to its last part (``out`` -> ``out_rejects``)."""
        if self.kind in ("csv", "parquet"):
            raise ValueError(f"cannot derive a Delta table from the {self.kind} file {self.location}")
        return TableRef(self.kind, self.location.rstrip("/") + suffix)


def resolve(ref: str, *, base: str | None = None) -> TableRef:
    """Classify a table reference string and resolve relative paths against ``base``.

    Raises:
        InputError: ``ref`` is empty.
    """
    text = ref.strip()
    if not text:
        raise InputError("empty table reference: give a path, an abfss:// URI or catalog.schema.table")
    if text.startswith(SAMPLE_PREFIX):
        try:
            return TableRef("csv", str(sample_path(text[len(SAMPLE_PREFIX) :])))
        except FileNotFoundError as e:
            raise InputError(str(e)) from e
    lowered = text.lower().rstrip("/")
    is_uri = bool(_URI.match(text)) and not re.match(r"^[A-Za-z]:\\", text)
    if not is_uri and _NAME.match(text) and not lowered.endswith((".csv", ".parquet", ".delta")):
        return TableRef("table", text)
    if base and not is_uri and not text.startswith("/"):
        text = base.rstrip("/") + "/" + text.lstrip("./")
    if lowered.endswith(".csv"):
        return TableRef("csv", text)
    if lowered.endswith(".parquet"):
        return TableRef("parquet", text)
    return TableRef("delta", text)


def abfss_uri(account: str, container: str, path: str = "") -> str:
    """``abfss://<container>@<account>.dfs.core.windows.net/<path>`` for an ADLS Gen2 location."""
    if not account or not container:
        raise InputError(f"ADLS Gen2 needs an account and a container; got account={account!r}, container={container!r}")
    return f"abfss://{container}@{account}.dfs.core.windows.net/{path.lstrip('/')}"


def adls_conf_key(account: str) -> str:
    """The Spark conf key that carries an ADLS Gen2 account key for the ``dfs`` endpoint."""
    return f"fs.azure.account.key.{account}.dfs.core.windows.net"


def configure_adls(spark: SparkSession, account: str, key: str) -> None:
    """Put an ADLS Gen2 shared access key into the session's conf (no mounts: they are legacy).

    The key is registered with :func:`platform.hide_in_logs` first, so a DEBUG log of the py4j
    call that carries it shows ``[REDACTED]``. It is set without the ``spark.hadoop.`` prefix on
    purpose: Spark copies run-time settings whose names start with ``spark`` into every job's
    properties, and the event log records those unredacted unless they were in the configuration
    at start-up.
    """
    from diabetes_spark.platform import hide_in_logs

    if not key:
        raise InputError(f"empty access key for storage account {account!r}")
    hide_in_logs(key)
    spark.conf.set(adls_conf_key(account), key)


def _is_missing_path(error: Exception) -> bool:
    text = str(error)
    return "PATH_NOT_FOUND" in text or "Path does not exist" in text or "is not a Delta table" in text


def read_table(spark: SparkSession, ref: TableRef, *, pinned: bool = False) -> DataFrame:
    """Read a table reference. CSV is read with every column as a string (plus the malformed-line
    column), so validation can reject unparseable values instead of Spark silently nulling them.

    ``pinned`` reads a Delta table at its current version, so every pass over the frame sees the
    same rows even while other jobs commit to the table.

    Raises:
        InputError: The file or table does not exist, is empty, has no header, or Spark cannot
            read its schema (e.g. Parquet files whose columns contradict each other).
        SchemaError: Column names are empty, repeated (case-insensitively) or reserved.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import AnalysisException

    try:
        if ref.kind == "csv":
            return _read_csv(spark, ref.location)
        if ref.kind == "parquet":
            return spark.read.parquet(ref.location)
        version = delta_version(spark, ref) if pinned else None
        reader = spark.read if version is None else spark.read.option("versionAsOf", version)
        if ref.kind == "table":
            return reader.table(ref.location)
        return reader.format("delta").load(ref.location)
    except AnalysisException as e:
        if _is_missing_path(e) or "TABLE_OR_VIEW_NOT_FOUND" in str(e):
            raise InputError(f"input {ref.location} does not exist (or is not a {ref.kind} table)") from e
        if _error_condition(e) == "COLUMN_ALREADY_EXISTS":
            raise SchemaError(
                f"input {ref.location} has two columns of the same name (names match case-insensitively): "
                f"{_one_line(e)} Rename or drop one of them."
            ) from e
        raise
    except Py4JJavaError as e:  # a Spark job reading the schema failed: the files are not readable as one table
        raise InputError(f"cannot read the columns of {ref.kind} input {ref.location}: {_one_line(e)}") from e


def _one_line(error: Exception) -> str:
    """The gist of a Spark error: its message without the JVM stack trace, on one line."""
    java = getattr(error, "java_exception", None)
    text = str(java.getMessage()) if java is not None else str(error)
    return " ".join(text.split("Driver stacktrace:")[0].split())[:1000]


def _csv_reader(spark: SparkSession):  # noqa: ANN202 - DataFrameReader
    """A CSV reader for RFC 4180 files, as Python's ``csv`` module and spreadsheets write them: a
    quoted field may hold line breaks (one record over several lines) and ``""`` is a quote inside
    a quoted field. Spark's defaults split such a record into malformed pieces and read ``""``
    literally. (A multi-line file is read by one task: correctness before parallelism here.)"""
    return spark.read.option("multiLine", True).option("escape", '"')


def _csv_header(spark: SparkSession, path: str) -> list[str]:
    """The header's column names exactly as written, checked before Spark uses them.

    Raises:
        InputError: The file is empty.
        SchemaError: A name is empty, repeated (case-insensitively) or reserved; Spark would
            otherwise rename it or fail half-way through reading.
    """
    first = _csv_reader(spark).option("header", False).csv(path).first()
    if first is None:
        raise InputError(f"CSV file {path} is empty: expected a header line and data rows")
    names = ["" if value is None else value for value in first]
    check_column_names(names, f"the header of CSV file {path}", reserved=(CORRUPT_RECORD,))
    return names


def _read_csv(spark: SparkSession, path: str) -> DataFrame:
    """Read a CSV with a header, all columns as strings, malformed lines kept in a corrupt column."""
    from pyspark.sql.types import StringType, StructField, StructType

    header = _csv_header(spark, path)
    schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT_RECORD, StringType())])
    return (
        _csv_reader(spark)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
        .option("enforceSchema", False)
        .schema(schema)
        .csv(path)
    )


def input_fingerprint(df: DataFrame) -> str:
    """A short stable hash of the files behind ``df`` (paths, sizes, modification times).

    The same files give the same fingerprint, so a rerun over unchanged input gets the same
    default batch id. Where file status cannot be read, the paths alone are hashed.
    """
    import hashlib

    spark = df.sparkSession
    parts = []
    for name in sorted(df.inputFiles()):
        try:
            jvm = spark.sparkContext._jvm
            path = jvm.org.apache.hadoop.fs.Path(name)
            status = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getFileStatus(path)
            parts.append(f"{name}|{status.getLen()}|{status.getModificationTime()}")
        except Exception:  # no JVM access (e.g. Spark Connect): the paths still identify the input
            parts.append(name)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def table_exists(spark: SparkSession, ref: TableRef) -> bool:
    """True when ``ref`` names an existing Delta table."""
    from delta.tables import DeltaTable

    if ref.kind == "table":
        return spark.catalog.tableExists(ref.location)
    try:
        return DeltaTable.isDeltaTable(spark, ref.location)
    except Exception:  # an unreachable or nonexistent path is simply "not a table" here
        return False


def holds_rows(spark: SparkSession, ref: TableRef, predicate: str) -> bool:
    """True when the existing Delta table ``ref`` has a row matching the SQL ``predicate`` (one
    small job: Delta skips the files whose column statistics rule the predicate out)."""
    return bool(read_table(spark, ref).where(predicate).limit(1).count())


#: Delta's refusals of a frame's columns (Delta checks them before it commits anything): names it
#: cannot store without column mapping, columns or types that do not match the existing table.
_DELTA_COLUMN_ERRORS = (
    "DELTA_INVALID_CHARACTERS_IN_COLUMN_NAME",
    "DELTA_METADATA_MISMATCH",
    "DELTA_FAILED_TO_MERGE_FIELDS",
)


def _error_condition(error: Exception) -> str:
    """The error class of a Spark or Delta exception ('' when it has none)."""
    condition = getattr(error, "getCondition", None) or getattr(error, "getErrorClass", None)
    return (condition() if condition else None) or ""


def _delta(spark: SparkSession, ref: TableRef):  # noqa: ANN202 - DeltaTable is imported lazily
    from delta.tables import DeltaTable

    if ref.kind == "table":
        return DeltaTable.forName(spark, ref.location)
    return DeltaTable.forPath(spark, ref.location)


def delta_version(spark: SparkSession, ref: TableRef) -> int | None:
    """The latest version of a Delta table, or ``None`` when ``ref`` is not a Delta table."""
    if ref.kind in ("csv", "parquet") or not table_exists(spark, ref):
        return None
    row = _delta(spark, ref).history(1).select("version").first()
    return None if row is None else int(row[0])


def _conflicts() -> tuple[type[BaseException], ...]:
    """Delta's commit-conflict exceptions: each means the commit was refused, so nothing landed."""
    import delta.exceptions.captured  # noqa: F401 - turns the JVM's conflict errors into these types
    from delta import exceptions as x

    return (
        x.ConcurrentAppendException,
        x.ConcurrentDeleteReadException,
        x.ConcurrentDeleteDeleteException,
        x.ConcurrentTransactionException,
        x.ConcurrentWriteException,
        x.MetadataChangedException,
        x.ProtocolChangedException,
        x.DeltaConcurrentModificationException,
    )


def _commit_metrics(spark: SparkSession, ref: TableRef, tag: str) -> dict[str, str] | None:
    """The operation metrics of the commit tagged ``tag``, or ``None`` when there is none.

    The last :data:`HISTORY_WINDOW` commits are searched first (cheap); the whole history only
    when other writers committed more than that since.
    """
    table = _delta(spark, ref)
    for history in (table.history(HISTORY_WINDOW), table.history()):
        row = history.filter(f"userMetadata = '{tag}'").select("operationMetrics").first()
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
            writer.saveAsTable(ref.location)
        else:
            writer.save(ref.location)
    except AnalysisException as e:
        if not _error_condition(e).startswith(_DELTA_COLUMN_ERRORS):
            raise
        raise SchemaError(
            f"Delta table {ref.location} refused the columns to write: {_one_line(e)} "
            "Rename the input's columns (Delta allows no ' ,;{}()=', tab or newline in a name unless the table "
            "uses column mapping), or write to a table whose columns match."
        ) from e


def _save_retrying(
    df: DataFrame, ref: TableRef, options: dict[str, str], mode: str, tries: int, partition_by: Sequence[str] = ()
) -> None:
    """Save, and save again while Delta refuses the commit for a concurrent one (see :func:`write_delta`)."""
    conflicts = _conflicts()  # imported before writing: Delta converts JVM errors only once loaded
    for attempt in range(1, tries + 1):
        try:
            _save(df, ref, options, mode, partition_by=partition_by)
            return
        except conflicts as error:
            if _commit_metrics(df.sparkSession, ref, options["userMetadata"]) is not None:
                return  # our own commit, reported as taken (e.g. a retried cloud-store request): it landed
            conflict = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
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
    tag = f"diabetes-spark:{uuid.uuid4()}"
    options = {"userMetadata": tag}
    if replace_where is not None:
        options["replaceWhere"] = replace_where
    if merge_schema:
        options["mergeSchema"] = "true"
    options.update(table_properties or {})
    _save_retrying(df, ref, options, mode, attempts, partition_by)
    metrics = _commit_metrics(df.sparkSession, ref, tag)
    if metrics is None:
        if expected_rows == 0:
            return 0  # Delta makes no commit for an empty overwrite that changes nothing
        raise InputError(f"the commit just written to {ref.location} is not in its history")
    # A replaceWhere on non-partition columns rewrites the other rows of touched files: not ours.
    return int(metrics.get("numOutputRows", "0")) - int(metrics.get("numCopiedRows", "0"))
