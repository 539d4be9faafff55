"""The orchestration both the notebooks and the CLI call: read, validate, act, write, summarise."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel

from diabetes_spark import schemas, storage
from diabetes_spark.errors import InputError, ReconciliationError, RejectThresholdError
from diabetes_spark.params import IngestParams

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["run_ingest", "check_reject_fraction"]

_log = logging.getLogger(__name__)


def check_reject_fraction(annotated: DataFrame, rows_in: int, rows_rejected: int, *, limit: float, source: str) -> None:
    """Fail before anything is written when the input is empty or too much of it was rejected.

    Raises:
        InputError: The input has no rows.
        RejectThresholdError: ``rows_rejected / rows_in > limit``; the message has the counts and
            the most frequent reasons.
    """
    if rows_in == 0:
        raise InputError(f"input {source} has no data rows; nothing to do")
    if rows_rejected / rows_in > limit:
        reasons = "; ".join(f"{reason!r} x{count}" for reason, count in schemas.top_reasons(annotated))
        raise RejectThresholdError(
            f"{rows_rejected} of {rows_in} rows ({rows_rejected / rows_in:.1%}) of {source} were rejected, "
            f"above max_reject_fraction={limit:g}; nothing was written. Top reasons: {reasons}. "
            "Fix the input or raise max_reject_fraction."
        )


def _reconcile(what: str, expected: int, written: int) -> None:
    if expected != written:
        raise ReconciliationError(f"{what}: expected to write {expected} rows but the Delta commit wrote {written}")


def run_ingest(spark: SparkSession, params: IngestParams) -> dict[str, Any]:
    """Land a raw CSV (or any readable table) in a Delta table with schema enforcement.

    Valid rows go to ``params.table``; rejected rows, each with its reason, to ``params.rejects``
    (default ``<table>_rejects``). ``rows_in == rows_written + rows_rejected`` always holds.

    Returns:
        ``{"rows_in", "rows_written", "rows_rejected", "table", "rejects_table", "ingest_id"}``.

    Raises:
        InputError: Missing, empty or header-less source (nothing is written).
        SchemaError: A required column is missing (nothing is written).
        RejectThresholdError: Too many rejected rows (nothing is written).
    """
    source = storage.resolve(params.source)
    target = storage.resolve(params.table)
    rejects = storage.resolve(params.rejects) if params.rejects else target.sibling("_rejects")
    ingest_id = f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"

    raw = storage.read_table(spark, source)
    annotated = schemas.annotate(raw, schemas.load_schema("training_raw"), required=(schemas.LABEL,))
    annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows_in, rows_rejected = schemas.reject_summary(annotated)
        check_reject_fraction(
            annotated, rows_in, rows_rejected, limit=params.max_reject_fraction, source=str(source)
        )
        written = storage.write_delta(schemas.valid_rows(annotated), target, mode=params.mode)  # type: ignore[arg-type]
        _reconcile(str(target), rows_in - rows_rejected, written)
        rejected = schemas.rejected_rows(annotated, source=str(source), batch_id=ingest_id)
        rejects_written = storage.write_delta(rejected, rejects, mode=params.mode)  # type: ignore[arg-type]
        _reconcile(str(rejects), rows_rejected, rejects_written)
    finally:
        annotated.unpersist()
    _log.info("ingested %s: %d in, %d written, %d rejected", source, rows_in, written, rows_rejected)
    return {
        "rows_in": rows_in,
        "rows_written": written,
        "rows_rejected": rows_rejected,
        "table": str(target),
        "rejects_table": str(rejects),
        "ingest_id": ingest_id,
    }
