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

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diabetes_spark.data import SAMPLE_PREFIX, sample_path
from diabetes_spark.errors import InputError
from diabetes_spark.schemas import CORRUPT_RECORD

if TYPE_CHECKING:
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
    "input_fingerprint",
]

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

    The key is set without the ``spark.hadoop.`` prefix on purpose: Spark copies run-time settings
    whose names start with ``spark`` into every job's properties, and the event log records those
    unredacted unless they were in the configuration at start-up.
    """
    if not key:
        raise InputError(f"empty access key for storage account {account!r}")
    spark.conf.set(adls_conf_key(account), key)


def _is_missing_path(error: Exception) -> bool:
    text = str(error)
    return "PATH_NOT_FOUND" in text or "Path does not exist" in text or "is not a Delta table" in text


def read_table(spark: SparkSession, ref: TableRef) -> DataFrame:
    """Read a table reference. CSV is read with every column as a string (plus the malformed-line
    column), so validation can reject unparseable values instead of Spark silently nulling them.

    Raises:
        InputError: The file or table does not exist, is empty or has no header.
    """
    from pyspark.errors import AnalysisException

    try:
        if ref.kind == "csv":
            return _read_csv(spark, ref.location)
        if ref.kind == "parquet":
            return spark.read.parquet(ref.location)
        if ref.kind == "table":
            return spark.read.table(ref.location)
        return spark.read.format("delta").load(ref.location)
    except AnalysisException as e:
        if _is_missing_path(e) or "TABLE_OR_VIEW_NOT_FOUND" in str(e):
            raise InputError(f"input {ref.location} does not exist (or is not a {ref.kind} table)") from e
        raise


def _read_csv(spark: SparkSession, path: str) -> DataFrame:
    """Read a CSV with a header, all columns as strings, malformed lines kept in a corrupt column."""
    from pyspark.sql.types import StringType, StructField, StructType

    header = spark.read.option("header", True).option("inferSchema", False).csv(path).columns
    if not header:
        raise InputError(f"CSV file {path} is empty: expected a header line and data rows")
    schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT_RECORD, StringType())])
    return (
        spark.read.option("header", True)
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


def write_delta(
    df: DataFrame,
    ref: TableRef,
    *,
    mode: Literal["append", "overwrite"] = "append",
    replace_where: str | None = None,
    merge_schema: bool = False,
    expected_rows: int | None = None,
) -> int:
    """Write ``df`` to a Delta table in one commit and return the rows that commit wrote.

    ``replace_where`` (with ``mode="overwrite"``) atomically replaces only the rows matching the
    predicate. ``merge_schema`` lets new columns (e.g. a new pass-through id) extend the table.
    ``expected_rows=0`` tells that ``df`` is known to be empty, where Delta may make no commit.
    The row count is read from the commit's own metrics (found by a unique commit tag),
    so counting costs no extra pass over the data.
    """
    if ref.kind in ("csv", "parquet"):
        raise InputError(f"cannot write Delta to the {ref.kind} file {ref.location}; give a Delta path or table name")
    spark = df.sparkSession
    tag = f"diabetes-spark:{uuid.uuid4()}"
    writer = df.write.format("delta").mode(mode).option("userMetadata", tag)
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    if ref.kind == "table":
        writer.saveAsTable(ref.location)
    else:
        writer.save(ref.location)
    history = _delta(spark, ref).history(20).filter(f"userMetadata = '{tag}'").select("operationMetrics").first()
    if history is None:
        if expected_rows == 0:
            return 0  # Delta makes no commit for an empty overwrite that changes nothing
        raise InputError(f"the commit just written to {ref.location} is not in its history")
    metrics = history[0]
    # A replaceWhere on non-partition columns rewrites the other rows of touched files: not ours.
    return int(metrics.get("numOutputRows", "0")) - int(metrics.get("numCopiedRows", "0"))
