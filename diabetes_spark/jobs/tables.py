"""The steps the jobs share: read an input and validate it, write a Delta table and check that the
commit wrote exactly the rows expected."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark import delta_writes, provenance, schemas, storage
from diabetes_spark.errors import OutputError, ReconciliationError, about
from diabetes_spark.runtime import cached

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from diabetes_spark.jobs.recorder import Recorder
    from diabetes_spark.storage import TableRef


def rejects_table(given: str, target: TableRef) -> TableRef:
    """The rejects table: ``given``, else ``<target>_rejects``."""
    return storage.resolve(given) if given else target.sibling("_rejects")


@contextmanager
def read_annotated(
    spark: SparkSession,
    ref: TableRef,
    *,
    schema: str,
    required: tuple[str, ...],
    recorder: Recorder,
    context: str = provenance.SOURCE,
) -> Iterator[DataFrame]:
    """The input read (step ``read``) and annotated with each row's reject reason, cached for the
    block on classic Spark: counting, reporting and writing reuse one read. The read is pinned to
    the table's current Delta version, so where nothing is cached (Spark Connect) every pass sees
    the same rows. The read (table and version, or file fingerprint) is the recorder's input in ``context``."""
    with recorder.step("read", source=str(ref)):
        raw, read = provenance.read_pinned(spark, ref)
        recorder.input(read, context=context)
        annotated = schemas.annotate(raw, schemas.load_schema(schema), required=required)
    with cached(annotated):
        yield annotated


def validate(annotated: DataFrame, *, limit: float, source: TableRef) -> tuple[int, int]:
    """``(rows in, rows rejected)``; stops the job if too many were rejected."""
    rows_in, rows_rejected = schemas.reject_summary(annotated)
    schemas.check_reject_fraction(annotated, rows_in, rows_rejected, limit=limit, source=str(source))
    return rows_in, rows_rejected


def reconcile(what: str, expected: int, written: int) -> None:
    """Raise unless ``written`` rows are the ``expected`` ones."""
    if expected != written:
        raise ReconciliationError(f"{what}: expected to write {expected} rows but the Delta commit wrote {written}")


def write(df: DataFrame, ref: TableRef, *, expected: int, **options: Any) -> int:
    """Write ``df`` to ``ref`` and check the commit wrote exactly ``expected`` rows."""
    with about(f"output table {ref}"):
        written = delta_writes.write_delta(df, ref, expected_rows=expected, **options)
    reconcile(str(ref), expected, written)
    return written


def check_destinations(spark: SparkSession, source: TableRef, *writes: tuple[TableRef, DataFrame]) -> None:
    """Every table a job writes, checked before its first write: the tables differ, none lies inside
    the input, and each can take its frame (:func:`check_destination`).

    Raises:
        OutputError: A destination is not a place the job may write; nothing was written.
    """
    refs = [ref for ref, _ in writes]
    keys = [_key(ref) for ref in refs]
    if len(set(keys)) < len(keys):
        same = refs[next(i for i, key in enumerate(keys) if keys.count(key) > 1)]
        raise OutputError(
            f"two tables this job writes (output, rejects, shadow output) are the same table {same}: give each a "
            "table of its own (--rejects, --shadow-output)"
        )
    for ref in refs:
        if ref.kind == "delta" and source.kind != "table" and (_key(ref) + "/").startswith(_key(source) + "/"):
            raise OutputError(f"output table {ref} lies inside the input {source}: write it somewhere else")
    for ref, df in writes:
        check_destination(spark, ref, df.schema)


def _key(ref: TableRef) -> str:
    location = ref.location.rstrip("/")
    if location.startswith("file:"):
        location = "/" + location.split(":", 1)[1].lstrip("/")
    return location.lower() if ref.kind == "table" else location


def check_destination(spark: SparkSession, ref: TableRef, schema: StructType) -> None:
    """Fail before anything is written when ``ref`` cannot take a table of ``schema``: an existing
    table without the columns written, or with other types (no write widens or retypes a table), a schema that does not exist, a
    place that cannot be created (under a file, unwritable) or a folder of other files.

    Raises:
        OutputError: ``ref`` is not a place this write may go; nothing was written.
    """
    subject = f"output table {ref.location}"
    with about(subject):
        exists = storage.table_exists(spark, ref)
        if exists:
            _check_columns(subject, storage.read_table(spark, ref).schema, schema)
        elif ref.kind == "table":
            namespace = ref.location.rsplit(".", 1)[0]
            if not spark.catalog.databaseExists(namespace):
                raise OutputError(
                    f"{subject} is in schema {namespace}, which does not exist: create it (CREATE SCHEMA {namespace}) "
                    "or give a path"
                )
    if not exists and ref.kind == "delta":
        _check_new_folder(subject, ref.location)


def _check_columns(subject: str, existing: StructType, writing: StructType) -> None:
    """The write's columns are the table's, or some of them (a pass-through column another batch
    had is left empty), each of the table's type: no write adds or retypes a column."""

    def columns(schema: StructType) -> dict[str, str]:
        return {f.name.lower(): f.dataType.simpleString() for f in schema.fields}

    have, want = columns(existing), columns(writing)
    missing = sorted(set(want) - set(have))
    retyped = sorted(name for name in set(have) & set(want) if have[name] != want[name])
    if not missing and not retyped:
        return
    found = "; ".join(
        f"{what}: {', '.join(names)}" for what, names in (("it lacks", missing), ("of another type", retyped)) if names
    )
    raise OutputError(
        f"{subject} exists with other columns than this job writes ({found}): it is another kind of table. Give a new "
        "table, or the one an earlier run of this job wrote (no write adds or changes a table's columns)"
    )


def _check_new_folder(subject: str, location: str) -> None:
    """A new Delta table's folder on this machine can be created, and holds no other files.

    Only local paths (``file:`` or none) are looked at: a cloud store's answer comes from the write."""
    if storage.is_uri(location) and not location.startswith("file:"):
        return
    path = Path(location.split(":", 1)[1] if location.startswith("file:") else location)
    if path.is_file():
        raise OutputError(f"{subject} is a file, not a folder: give a folder (a new one, or a Delta table's)")
    if path.is_dir():
        if any(path.iterdir()):
            raise OutputError(
                f"{subject} is a folder holding other files, not a Delta table: give a new or empty folder"
            )
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{subject} cannot be created: {parent} is a file [NotADirectoryError]")
    try:
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as e:
        raise OutputError(f"{subject} cannot be created in {parent}: {e.strerror} [{type(e).__name__}]") from e
