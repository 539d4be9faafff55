"""The steps the jobs share: read an input and validate it, write a Delta table and check that the
commit wrote exactly the rows expected."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from diabetes_spark import delta_writes, schemas, storage
from diabetes_spark.errors import ReconciliationError
from diabetes_spark.runtime import cached

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.jobs.recorder import Recorder
    from diabetes_spark.storage import TableRef


def rejects_table(given: str, target: TableRef) -> TableRef:
    """The rejects table: ``given``, else ``<target>_rejects``."""
    return storage.resolve(given) if given else target.sibling("_rejects")


@contextmanager
def read_annotated(
    spark: SparkSession, ref: TableRef, *, schema: str, required: tuple[str, ...], recorder: Recorder
) -> Iterator[DataFrame]:
    """The input read (step ``read``) and annotated with each row's reject reason, cached for the
    block on classic Spark: counting, reporting and writing reuse one read. The read is pinned to
    the table's current Delta version, so where nothing is cached (Spark Connect) every pass sees
    the same rows."""
    with recorder.step("read", source=str(ref)):
        raw = storage.read_table(spark, ref, pinned=True)
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
    written = delta_writes.write_delta(df, ref, expected_rows=expected, **options)
    reconcile(str(ref), expected, written)
    return written
