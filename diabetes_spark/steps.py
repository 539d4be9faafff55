"""The steps the jobs are made of: telemetry per run, reading and validating an input, writing and
reconciling, logging and registering the model, scoring a batch and recording what it found.

Each step does one thing with the modules below it; :mod:`diabetes_spark.jobs` names them in order.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark import delta_writes, drift, evaluation, registry, schemas, scoring, spark_models, storage, training
from diabetes_spark.errors import ReconciliationError
from diabetes_spark.runtime import cached
from diabetes_spark.telemetry import Telemetry
from diabetes_spark.telemetry import start as start_telemetry

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from diabetes_spark.params import TrainParams
    from diabetes_spark.storage import TableRef


@contextmanager
def job_telemetry(given: Telemetry | None, component: str, backend: str = "") -> Iterator[Telemetry]:
    """The caller's telemetry (it closes it), or one from the environment on ``backend`` (empty:
    the environment's), closed here; either way a failure is sent once, with its stack trace, and
    marks the run failed."""
    if given is None:
        with start_telemetry(component, backend=backend) as own:
            yield own
        return
    try:
        yield given
    except BaseException as error:
        given.fail(error)
        raise


@contextmanager
def read_annotated(
    spark: SparkSession, ref: TableRef, schema: str, required: tuple[str, ...], tel: Telemetry
) -> Iterator[DataFrame]:
    """The input read (step ``read``) and validated, cached for the block on classic Spark: counting,
    reporting and writing reuse one read. The read is pinned to the table's current Delta version,
    so where nothing is cached (Spark Connect) every pass sees the same rows."""
    with tel.span("read", source=str(ref)):
        raw = storage.read_table(spark, ref, pinned=True)
        annotated = schemas.annotate(raw, schemas.load_schema(schema), required=required)
    with cached(annotated):
        yield annotated


def validate(annotated: DataFrame, limit: float, source: TableRef) -> tuple[int, int]:
    """Count the input and its rejects; stop if too many were rejected."""
    rows_in, rows_rejected = schemas.reject_summary(annotated)
    schemas.check_reject_fraction(annotated, rows_in, rows_rejected, limit=limit, source=str(source))
    return rows_in, rows_rejected


def reconcile(what: str, expected: int, written: int) -> None:
    if expected != written:
        raise ReconciliationError(f"{what}: expected to write {expected} rows but the Delta commit wrote {written}")


def write(df: DataFrame, ref: TableRef, expected: int, **options: Any) -> int:
    """Write ``df`` to ``ref`` and check the commit wrote exactly ``expected`` rows."""
    written = delta_writes.write_delta(df, ref, expected_rows=expected, **options)
    reconcile(str(ref), expected, written)
    return written


def record(tel: Telemetry, metrics: dict[str, Any]) -> None:
    """The same metrics to the active MLflow run and to telemetry."""
    import mlflow

    mlflow.log_metrics(metrics)
    tel.record(metrics)


def log_reports(annotated: DataFrame, rows_in: int, rows_rejected: int, result: training.TrainResult) -> None:
    import mlflow

    quality = evaluation.data_quality_report(annotated, rows_in, rows_rejected)
    profile, statistics = drift.profile_and_statistics(result.train)
    with tempfile.TemporaryDirectory() as folder:
        evaluation.write_reports(
            Path(folder),
            model=result.model,
            statistics=statistics,
            predictions=result.predictions,
            quality=quality,
            profile=profile,
            label=schemas.LABEL,
            prediction=schemas.PREDICTION,
        )
        mlflow.log_artifacts(folder, registry.REPORTS_ARTIFACT)
    mlflow.log_dict(json.loads(schemas.load_schema("training_raw").json()), "schema/training_raw.json")


def register(params: TrainParams, result: training.TrainResult, valid: DataFrame) -> str:
    """Log the model (with its folded linear spec, if linear), register it, alias it ``challenger``."""
    spec = scoring.linear_spec(result.model)
    info = spark_models.log_model(
        result.model,
        example=valid.select(*schemas.feature_names()),
        metadata={scoring.LINEAR_SPEC: spec} if spec else None,
        dfs_tmpdir=params.dfs_tmpdir,
    )
    version = registry.register(info.model_uri, params.model_name)
    registry.set_alias(params.model_name, registry.CHALLENGER, version)
    return version


def load_scorer(
    spark: SparkSession, resolved: registry.ResolvedModel, dfs_tmpdir: str = ""
) -> tuple[Any, Column | None, Column]:
    """``(PipelineModel or None, compiled Column or None, unseen-SEX Column)`` of a resolved version.

    A linear model's folded coefficients travel in its metadata: no ``PipelineModel`` load then.
    """
    import mlflow

    spec = registry.model_metadata(resolved).get(scoring.LINEAR_SPEC)
    model = None if spec else spark_models.load_model(spark, resolved, dfs_tmpdir=dfs_tmpdir)
    compiled = scoring.spec_column(spec) if spec else scoring.compile_linear(model)
    labels = list(spec["sex_weights"]) if spec else scoring.category_labels(model)
    mlflow.set_tag("scoring_path", "column_expression" if compiled is not None else "pipeline_transform")
    return model, compiled, scoring.unseen_category(labels)


def write_batch(
    spark: SparkSession,
    scored: DataFrame,
    report: drift.BatchReport,
    lineage: scoring.Lineage,
    output: TableRef,
    rejects: TableRef,
    source: TableRef,
) -> int:
    """Replace the batch's predictions, then its rejects; returns the predictions written."""
    replace = f"batch_id = '{lineage.batch_id}'"
    layout = {"mode": "overwrite", "replace_where": replace, "partition_by": scoring.BATCH_PARTITIONING}
    # With no rejects counted in the pinned input, every row is written: validity is not evaluated again.
    valid = scored.drop(schemas.REASON, schemas.RECORD) if report.rows_rejected == 0 else schemas.valid_rows(scored)
    predictions = scoring.with_lineage(valid, lineage)
    properties = scoring.PREDICTIONS_TABLE_PROPERTIES
    written = write(predictions, output, report.rows_scored, merge_schema=True, table_properties=properties, **layout)
    if (
        report.rows_rejected == 0
        and storage.table_exists(spark, rejects)
        and not storage.holds_rows(spark, rejects, replace)
    ):
        return written  # no rejects, and none of this batch to replace
    rejected = schemas.rejected_rows(scored, source=str(source), batch_id=lineage.batch_id)
    if report.rows_rejected == 0:  # known from the counts: no pass over the input to find none
        rejected = rejected.limit(0)
    write(rejected, rejects, report.rows_rejected, **layout)
    return written


def record_batch(tel: Telemetry, report: drift.BatchReport, written: int, threshold: float) -> None:
    """The batch's counts, prediction statistics and drift to MLflow and telemetry; warn on drift."""
    import mlflow

    counts = {"rows_in": report.rows_in, "rows_scored": report.rows_scored, "rows_rejected": report.rows_rejected}
    rest = {"unseen_sex": report.unseen_sex, **{k: v for k, v in report.statistics.items() if v is not None}}
    rest.update({f"psi_{f}": v for f, v in report.drift.items()})
    mlflow.log_metrics({**counts, **rest})
    tel.record(rest)
    tel.record({"rows_written": written})
    mlflow.set_tag("drifted_features", ",".join(report.drifted) or "none")
    if report.drifted:
        tel.logger().warning(
            "drift: population stability index above %g for %s (%s)",
            threshold,
            ", ".join(report.drifted),
            ", ".join(f"{f}={report.drift[f]:.3f}" for f in report.drifted),
        )
