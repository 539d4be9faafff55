"""Table references, reading tables and Delta history (writes: :mod:`delta_writes`; ADLS Gen2
credentials: :mod:`adls`).

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
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from diabetes_spark.data import SAMPLE_PREFIX, sample_uri
from diabetes_spark.errors import (
    InputError,
    ParamError,
    SchemaError,
    error_condition,
    one_line,
    spark_failures,
    user_error,
)
from diabetes_spark.schemas import CORRUPT_RECORD, check_column_names

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


_log = logging.getLogger(__name__)

Kind = Literal["delta", "table", "csv", "parquet"]
_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w-]*){1,2}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: Endings of CSV files, compressed ones included (Spark decompresses them by their ending).
_CSV = (".csv", ".csv.gz", ".csv.bz2")
#: Characters Hadoop reads as a glob pattern in a file path: escaped, every path given is literal.
_GLOB = re.compile(r"([\\*?\[\]{}])")


@dataclass(frozen=True)
class TableRef:
    """A resolved table reference: what kind of thing it is and where."""

    kind: Kind
    location: str

    def __str__(self) -> str:
        return self.location

    @property
    def identifier(self) -> str:
        """How SQL and the catalog API name it: a table name back-quoted part by part (a hyphen, as in
        ``main.my-schema.t``, needs it), a path as Delta's SQL does, ``delta.`<path>```."""
        if self.kind == "table":
            return ".".join("`" + part.replace("`", "``") + "`" for part in self.location.split("."))
        return "delta.`" + self.location.replace("`", "``") + "`"

    def sibling(self, suffix: str) -> TableRef:
        """The reference with ``suffix`` appended to its last part (``out`` -> ``out_rejects``)."""
        if self.kind in ("csv", "parquet"):
            raise ParamError(
                f"cannot derive a rejects table from the {self.kind} file {self.location}: write to a Delta "
                "table (a path, an abfss:// URI or catalog.schema.table), or name the rejects table (--rejects)"
            )
        return TableRef(self.kind, self.location.rstrip("/") + suffix)


def resolve(ref: str, *, base: str | None = None) -> TableRef:
    """Classify a table reference string and resolve relative paths against ``base`` (else, off
    Databricks, against the working directory).

    Raises:
        InputError: ``ref`` is empty.
        ParamError: A relative path on Databricks without ``base``.
    """
    text = ref.strip()
    if not text:
        raise InputError("empty table reference: give a path, an abfss:// URI or catalog.schema.table")
    if text.startswith(SAMPLE_PREFIX):
        try:
            return TableRef("csv", sample_uri(text[len(SAMPLE_PREFIX) :]))
        except FileNotFoundError as e:
            raise InputError(str(e)) from e
    lowered = text.lower().rstrip("/")
    uri = is_uri(text)
    if not uri and _NAME.match(text) and not lowered.endswith((*_CSV, ".parquet", ".delta")):
        return TableRef("table", text)
    if base and not uri and not text.startswith("/"):
        text = base.rstrip("/") + "/" + text.lstrip("./")
    elif not uri and not os.path.isabs(text):
        text = _absolute(text)
    if lowered.endswith(_CSV):
        return TableRef("csv", text)
    if lowered.endswith(".parquet"):
        return TableRef("parquet", text)
    return TableRef("delta", text)


def is_uri(location: str) -> bool:
    """True when ``location`` has a scheme (``abfss:``, ``file:``), not for ``C:\\`` paths."""
    return bool(_URI.match(location)) and not re.match(r"^[A-Za-z]:\\", location)


def _absolute(path: str) -> str:
    """A relative local path made absolute against the working directory of the command, so Spark
    (whose JVM, or Spark Connect server, may have another one) and Delta's SQL (``delta.`<path>```
    takes absolute paths only) see the same location. On Databricks a relative path has no such
    root and is refused."""
    from diabetes_spark.runtime import is_databricks

    if is_databricks():
        raise ParamError(
            f"relative path {path!r} has no root on Databricks: give a catalog.schema.table name, a /Volumes/... "
            "path or an abfss:// URI (or storage secrets, which root relative paths at the container)"
        )
    return os.path.abspath(path)


def _is_missing_path(error: Exception) -> bool:
    text = str(error)
    return "PATH_NOT_FOUND" in text or "Path does not exist" in text or "is not a Delta table" in text


def read_table(spark: SparkSession, ref: TableRef, *, pinned: bool = False, version: int | None = None) -> DataFrame:
    """Read a table reference (see :func:`read_versioned`)."""
    return read_versioned(spark, ref, pinned=pinned, version=version)[0]


def read_versioned(
    spark: SparkSession, ref: TableRef, *, pinned: bool = False, version: int | None = None
) -> tuple[DataFrame, int | None]:
    """Read a table reference; with the Delta version read (``None``: a file, or the latest). CSV is read with every column as a string (plus the malformed-line
    column), so validation can reject unparseable values instead of Spark silently nulling them.

    ``pinned`` reads a Delta table at its current version, so every pass over the frame sees the
    same rows even while other jobs commit to the table; ``version`` reads a Delta table at that
    version (a batch's recorded input, read again).

    Raises:
        InputError: The file or table does not exist, is empty, has no header, or Spark cannot
            read its schema (e.g. Parquet files whose columns contradict each other).
        SchemaError: Column names are empty, repeated (case-insensitively) or reserved.
    """
    from pyspark.errors import AnalysisException

    try:
        if ref.kind == "csv":
            return _read_csv(spark, literal(ref.location)), None
        if ref.kind == "parquet":
            return spark.read.parquet(literal(ref.location)), None
        if pinned and version is None:
            version = delta_version(spark, ref)
        reader = spark.read if version is None else spark.read.option("versionAsOf", version)
        if ref.kind == "table":
            return reader.table(ref.identifier), version
        return reader.format("delta").load(ref.location), version
    except AnalysisException as e:
        if _is_missing_path(e) or "TABLE_OR_VIEW_NOT_FOUND" in str(e):
            raise InputError(f"input {ref.location} does not exist (or is not a {ref.kind} table)") from e
        if error_condition(e) == "COLUMN_ALREADY_EXISTS":
            raise SchemaError(
                f"input {ref.location} has two columns of the same name (names match case-insensitively): "
                f"{one_line(e)} Rename or drop one of them."
            ) from e
        mapped = user_error(e, f"input {ref.location}")
        if mapped is None:
            raise
        raise mapped from e
    except spark_failures() as e:  # a Spark job reading the schema failed: the files are not readable as one table
        mapped = user_error(e, f"input {ref.location}")
        if mapped is None:
            mapped = InputError(f"cannot read the columns of {ref.kind} input {ref.location}: {one_line(e)}")
        raise mapped from e


def literal(path: str) -> str:
    """``path`` with Hadoop's glob characters escaped: a file named ``batch[1].csv`` is read, not ``batch1.csv``."""
    return _GLOB.sub(r"\\\1", path)


def _csv_reader(spark: SparkSession):
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


def default_batch_id(
    spark: SparkSession, ref: TableRef, raw: DataFrame, *, version: int | None = None, fingerprint: str = ""
) -> str:
    """A batch id stable for the input: ``<name>-v<Delta version>``, or ``<name>-<file fingerprint>``
    (the ``version`` or ``fingerprint`` of the read that was made, when given)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", ref.location.rstrip("/").rsplit("/", 1)[-1])[:80] or "input"
    version = version if version is not None or fingerprint else delta_version(spark, ref)
    if version is not None:
        return f"{name}-v{version}"
    return f"{name}-{fingerprint or input_fingerprint(raw)}"


def input_fingerprint(df: DataFrame) -> str:
    """A short stable hash of the files behind ``df`` (paths, sizes, modification times).

    The same files give the same fingerprint, so a rerun over unchanged input gets the same
    default batch id. The file status comes from Spark's ``binaryFile`` source with its content
    column left out, so no file is read and no JVM handle is needed (it works over Spark Connect
    too). Where the status cannot be read, the paths alone are hashed.
    """
    import hashlib

    names = sorted(df.inputFiles())
    status: dict[str, tuple[int, int]] = {}
    if names:
        try:
            files = df.sparkSession.read.format("binaryFile").load(names)
            for path, size, modified in files.selectExpr("path", "length", "unix_millis(modificationTime)").collect():
                status[_file_key(path)] = (int(size), int(modified))
        except Exception:  # unreadable status (a store without listing rights): the paths identify the input
            _log.debug("no file status for %d input files; fingerprinting their paths", len(names))
    parts = []
    for name in names:
        known = status.get(_file_key(name))
        parts.append(f"{name}|{known[0]}|{known[1]}" if known else name)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _file_key(uri: str) -> str:
    """A file URI compared whatever its spelling (``file:/x`` and ``file:///x`` are one file)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return f"{parsed.scheme or 'file'}://{parsed.netloc}{unquote(parsed.path)}"


def table_exists(spark: SparkSession, ref: TableRef) -> bool:
    """True when ``ref`` names an existing Delta table.

    A path is probed by resolving its schema, which reads the table's latest snapshot only:
    ``DESCRIBE HISTORY`` (:func:`delta_version`) also decodes commit records, many times slower, and
    the jobs ask this of every table they write. Failures other than "no Delta table" propagate."""
    if ref.kind == "table":
        return spark.catalog.tableExists(ref.identifier)
    if ref.kind in ("csv", "parquet"):
        return False
    try:
        _ = spark.read.format("delta").load(literal(ref.location)).schema
    except spark_failures() as e:
        if not _not_a_delta_table(e):
            raise
        return False
    return True


def may_hold_rows(spark: SparkSession, ref: TableRef, predicate: str) -> bool:
    """False when the existing Delta table ``ref`` surely has no row matching the SQL ``predicate``:
    no data file is left once Delta has pruned them by partition values and file statistics. A
    lookup in the table's log alone, with no Spark job; exact for a predicate on a partition column."""
    return bool(read_table(spark, ref).where(predicate).inputFiles())


def history(spark: SparkSession, ref: TableRef, *, limit: int | None = None) -> DataFrame:
    """The commit history of a Delta table, newest first (``DESCRIBE HISTORY``).

    SQL rather than ``delta.tables.DeltaTable``: it needs no Delta Python module, so it is the same
    on every Delta version, classic or over Spark Connect (where ``DeltaTable`` needs a server plugin).
    """
    return spark.sql(f"DESCRIBE HISTORY {ref.identifier}" + (f" LIMIT {int(limit)}" if limit else ""))


def delta_version(spark: SparkSession, ref: TableRef) -> int | None:
    """The latest version of a Delta table, or ``None`` when ``ref`` is not a Delta table or does not
    exist (one ``DESCRIBE HISTORY`` of a path: it fails for anything but a Delta table). Any other
    failure (no access, an unreachable store) propagates: it must not read as "no table"."""
    if ref.kind in ("csv", "parquet") or (ref.kind == "table" and not spark.catalog.tableExists(ref.identifier)):
        return None
    try:
        row = history(spark, ref, limit=1).select("version").first()
    except spark_failures() as e:
        if ref.kind == "table" or not _not_a_delta_table(e):  # an existing catalog table that is not Delta, too
            raise
        return None
    return None if row is None else int(row[0])


#: Error classes of ``DESCRIBE HISTORY`` on a path that holds no Delta table (missing, a folder or a file).
_NO_DELTA_TABLE = ("DELTA_TABLE_ONLY_OPERATION", "DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND", "PATH_NOT_FOUND")


def _not_a_delta_table(error: Exception) -> bool:
    return error_condition(error) in _NO_DELTA_TABLE or _is_missing_path(error)
