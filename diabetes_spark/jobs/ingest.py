"""The ingest job: land a raw CSV (or any readable table) in a Delta table, rejects beside it."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark import schemas, storage
from diabetes_spark.jobs import tables
from diabetes_spark.jobs.recorder import recording
from diabetes_spark.telemetry import COMPONENT_INGEST

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.params import IngestParams
    from diabetes_spark.storage import TableRef
    from diabetes_spark.telemetry import Telemetry


def _append_id(spark: SparkSession, source: TableRef, rows: DataFrame) -> str:
    """The application id of an append of ``source`` as it is now (its Delta version, or its files'
    fingerprint): the same input appended again is recognised, a changed one is not."""
    key = f"{source.location}|{storage.default_batch_id(spark, source, rows)}"
    return "diabetes-spark-ingest-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def run_ingest(spark: SparkSession, params: IngestParams, *, telemetry: Telemetry | None = None) -> dict[str, Any]:
    """Land a raw CSV (or any readable table) in a Delta table with schema enforcement.

    Valid rows go to ``params.table``; rejected rows, each with its reason, to ``params.rejects``
    (default ``<table>_rejects``). ``rows_in == rows_written + rows_rejected`` always holds. Both
    tables are checked before either is written; an append of an input already appended to them
    (a rerun) writes nothing again and reports the rows of the first.

    Returns:
        ``{"rows_in", "rows_written", "rows_rejected", "table", "rejects_table", "ingest_id"}``.
    """
    ingest_id = f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with recording(telemetry, COMPONENT_INGEST, params.telemetry_backend) as record:
        source, target = storage.resolve(params.source), storage.resolve(params.table)
        rejects = tables.rejects_table(params.rejects, target)
        record.identify(batch_id=ingest_id)
        required = (schemas.LABEL,)
        with tables.read_annotated(spark, source, schema="training_raw", required=required, recorder=record) as rows:
            valid = schemas.valid_rows(rows)
            rejected = schemas.rejected_rows(rows, source=str(source), batch_id=ingest_id)
            tables.check_destinations(spark, source, (target, valid), (rejects, rejected))
            with record.step("validate", about=f"input {source}"):
                rows_in, rows_rejected = tables.validate(rows, limit=params.max_reject_fraction, source=source)
                record.record({"rows_in": rows_in, "rows_rejected": rows_rejected}, rows=rows_in)
            with record.step("write"):
                # An append is made once per input: a rerun after a failure between the two tables
                # completes the second without doubling the first (see delta_writes.write_delta).
                once = _append_id(spark, source, rows) if params.mode == "append" else ""
                written = tables.write(valid, target, expected=rows_in - rows_rejected, mode=params.mode, once_as=once)
                tables.write(rejected, rejects, expected=rows_rejected, mode=params.mode, once_as=once)
                record.record({"rows_written": written}, rows=written + rows_rejected)
        record.log().info("ingested %s: %d in, %d written, %d rejected", source, rows_in, written, rows_rejected)
    return {
        "rows_in": rows_in,
        "rows_written": written,
        "rows_rejected": rows_rejected,
        "table": str(target),
        "rejects_table": str(rejects),
        "ingest_id": ingest_id,
    }
