"""The ingest job: land a raw CSV (or any readable table) in a Delta table, rejects beside it."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark import schemas, storage
from diabetes_spark.jobs import tables
from diabetes_spark.jobs.recorder import recording
from diabetes_spark.telemetry import COMPONENT_INGEST

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from diabetes_spark.params import IngestParams
    from diabetes_spark.telemetry import Telemetry


def run_ingest(spark: SparkSession, params: IngestParams, *, telemetry: Telemetry | None = None) -> dict[str, Any]:
    """Land a raw CSV (or any readable table) in a Delta table with schema enforcement.

    Valid rows go to ``params.table``; rejected rows, each with its reason, to ``params.rejects``
    (default ``<table>_rejects``). ``rows_in == rows_written + rows_rejected`` always holds.

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
            with record.step("validate"):
                rows_in, rows_rejected = tables.validate(rows, limit=params.max_reject_fraction, source=source)
                record.record({"rows_in": rows_in, "rows_rejected": rows_rejected}, rows=rows_in)
            with record.step("write"):
                valid = schemas.valid_rows(rows)
                written = tables.write(valid, target, expected=rows_in - rows_rejected, mode=params.mode)
                rejected = schemas.rejected_rows(rows, source=str(source), batch_id=ingest_id)
                tables.write(rejected, rejects, expected=rows_rejected, mode=params.mode)
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
