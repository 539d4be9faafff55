"""The three jobs the notebooks and the CLI call, each a short list of named steps: read,
validate, act (fit or score), write, record. The work of each step lives in its own module."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark import (
    __version__,
    drift,
    promotion,
    registry,
    schemas,
    scoring,
    spark_models,
    steps,
    storage,
    training,
)
from diabetes_spark.errors import ReconciliationError
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import local_home
from diabetes_spark.telemetry import COMPONENT_INGEST, COMPONENT_SCORE, COMPONENT_TRAIN

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession

    from diabetes_spark.params import IngestParams, ScoreParams, TrainParams
    from diabetes_spark.telemetry import Telemetry


def run_ingest(spark: SparkSession, params: IngestParams, *, telemetry: Telemetry | None = None) -> dict[str, Any]:
    """Land a raw CSV (or any readable table) in a Delta table with schema enforcement.

    Valid rows go to ``params.table``; rejected rows, each with its reason, to ``params.rejects``
    (default ``<table>_rejects``). ``rows_in == rows_written + rows_rejected`` always holds.

    Returns:
        ``{"rows_in", "rows_written", "rows_rejected", "table", "rejects_table", "ingest_id"}``.
    """
    ingest_id = f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with steps.job_telemetry(telemetry, COMPONENT_INGEST, params.telemetry_backend) as tel:
        source, target = storage.resolve(params.source), storage.resolve(params.table)
        rejects = storage.resolve(params.rejects) if params.rejects else target.sibling("_rejects")
        tel.set_dimensions(batch_id=ingest_id)
        with steps.read_annotated(spark, source, "training_raw", (schemas.LABEL,), tel) as annotated:
            with tel.span("validate"):
                rows_in, rows_rejected = steps.validate(annotated, params.max_reject_fraction, source)
                tel.record({"rows_in": rows_in, "rows_rejected": rows_rejected})
                tel.rows(rows_in)
            with tel.span("write"):
                written = steps.write(schemas.valid_rows(annotated), target, rows_in - rows_rejected, mode=params.mode)
                rejected = schemas.rejected_rows(annotated, source=str(source), batch_id=ingest_id)
                steps.write(rejected, rejects, rows_rejected, mode=params.mode)
                tel.rows(written + rows_rejected)
        tel.record({"rows_written": written})
        tel.logger().info("ingested %s: %d in, %d written, %d rejected", source, rows_in, written, rows_rejected)
    return {
        "rows_in": rows_in,
        "rows_written": written,
        "rows_rejected": rows_rejected,
        "table": str(target),
        "rejects_table": str(rejects),
        "ingest_id": ingest_id,
    }


def run_training(
    spark: SparkSession,
    params: TrainParams,
    *,
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
    telemetry: Telemetry | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log, register and (if better) promote a model, in one MLflow run.

    The run logs every parameter, the data shape, the held-out metrics, the reports and the model.
    The new version gets alias ``challenger``; ``champion`` moves to it only if it wins
    (:func:`promotion.promote_if_better`). The run ends FINISHED, or FAILED when anything raises.

    Args:
        spark: The session.
        params: Validated training parameters.
        home: Local workspace folder of the default MLflow store (default: :func:`local_home`).
        mlflow_location: Where to track and register (default: the environment's, else ``home``'s).
        telemetry: The run's telemetry, owned (and closed) by the caller; default: one started from
            ``$APPLICATIONINSIGHTS_CONNECTION_STRING`` and closed here. Steps ``read``,
            ``validate``, ``fit``, ``evaluate`` and ``register`` are its spans.

    Returns:
        ``{"run_id", "experiment_id", "model_name", "model_version", "metrics": {rmse, mae, r2},
        "promoted", "champion_version", "rows_in", "rows_rejected"}``.
    """
    import mlflow

    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with steps.job_telemetry(telemetry, COMPONENT_TRAIN, params.telemetry_backend) as tel, location.active():
        registry.check_model_name(params.model_name)
        spark_models.check_staging(spark, params.dfs_tmpdir)  # over Connect the model needs a shared folder
        source = storage.resolve(params.training_data)
        experiment_id = location.ensure_experiment(params.experiment)
        tel.set_dimensions(mlflow_experiment_id=experiment_id, model_name=params.model_name)
        with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
            tel.set_dimensions(mlflow_run_id=run.info.run_id)
            mlflow.set_tags({"job": "train", "diabetes_spark_version": __version__, "training_data": str(source)})
            mlflow.log_params(dataclasses.asdict(params))
            with steps.read_annotated(spark, source, "training_raw", (schemas.LABEL,), tel) as annotated:
                with tel.span("validate"):
                    rows_in, rows_rejected = steps.validate(annotated, params.max_reject_fraction, source)
                    steps.record(
                        tel, {"rows_in": rows_in, "rows_rejected": rows_rejected, "rows_valid": rows_in - rows_rejected}
                    )
                    tel.rows(rows_in)
                    mlflow.log_param("input_columns", len(annotated.columns) - 2)
                with tel.span("fit", estimator=params.estimator):
                    valid = schemas.valid_rows(annotated).select(*schemas.load_schema("training_raw").fieldNames())
                    result = training.fit(valid, params)
                    tel.rows(result.rows_train)
                with tel.span("evaluate"):
                    steps.record(
                        tel, {"rows_train": result.rows_train, "rows_test": result.rows_test, **result.metrics}
                    )
                    if result.best_params:
                        mlflow.log_params({f"best_{k}": v for k, v in result.best_params.items()})
                    steps.log_reports(annotated, rows_in, rows_rejected, result)
                with tel.span("register") as log:
                    version = steps.register(params, result, valid)
                    tel.set_dimensions(model_version=version)
                    promoted, champion = promotion.promote_if_better(params, version, result, log)
                    tel.record({"promoted": promoted})
    return {
        "run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "model_name": params.model_name,
        "model_version": version,
        "metrics": {k: result.metrics[k] for k in ("rmse", "mae", "r2")},
        "promoted": promoted,
        "champion_version": champion,
        "rows_in": rows_in,
        "rows_rejected": rows_rejected,
    }


def run_batch_scoring(
    spark: SparkSession,
    params: ScoreParams,
    *,
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
    telemetry: Telemetry | None = None,
) -> dict[str, Any]:
    """Score a table with a registered model and write predictions with lineage, once per batch.

    The model version is resolved once (by number, or by alias, default ``champion``). Rejected
    rows go to ``params.rejects`` (default ``<output>_rejects``) with their reasons. Predictions and
    rejects of ``batch_id`` replace earlier rows of that batch atomically (Delta ``replaceWhere``),
    so a rerun never duplicates. Counts, prediction statistics and drift come from one pass
    (:func:`drift.monitor`), and ``rows_in == rows_scored + rows_rejected`` is checked before
    anything is written. Everything is logged to an MLflow run of ``params.experiment``.

    Args: as :func:`run_training`; the telemetry's spans are ``read``, ``load_model``,
        ``validate``, ``score`` and ``write``.

    Returns:
        ``{"rows_in", "rows_scored", "rows_rejected", "model_version", "batch_id", "output",
        "rejects_table", "run_id", "unseen_sex", "drift", "drifted_features"}``.
    """
    import mlflow

    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with steps.job_telemetry(telemetry, COMPONENT_SCORE, params.telemetry_backend) as tel, location.active():
        registry.check_model_name(params.model_name)
        source, output = storage.resolve(params.input), storage.resolve(params.output)
        rejects = storage.resolve(params.rejects) if params.rejects else output.sibling("_rejects")
        tel.set_dimensions(model_name=params.model_name)
        resolved = registry.resolve_version(params.model_name, version=params.model_version, alias=params.model_alias)
        tel.set_dimensions(model_version=resolved.version)
        experiment_id = location.ensure_experiment(params.experiment)
        tel.set_dimensions(mlflow_experiment_id=experiment_id)
        with tel.span("read", source=str(source)):
            raw = storage.read_table(spark, source, pinned=True)  # every pass below reads the same rows
            scoring.check_input_columns(raw.columns)
            batch_id = params.batch_id or storage.default_batch_id(spark, source, raw)
        tel.set_dimensions(batch_id=batch_id)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"score-{batch_id}") as run:
            tel.set_dimensions(mlflow_run_id=run.info.run_id)
            mlflow.set_tags({"job": "batch_score", "diabetes_spark_version": __version__, "batch_id": batch_id})
            mlflow.log_params(
                {**dataclasses.asdict(params), "batch_id": batch_id, "resolved_model_version": resolved.version}
            )
            with tel.span("load_model", model_uri=resolved.uri):
                model, compiled, unseen = steps.load_scorer(spark, resolved, params.dfs_tmpdir)
            with tel.span("validate"):
                annotated = schemas.annotate(raw, schemas.load_schema("scoring_input"))
            # Not cached: re-reading the pinned input and scoring it again is cheaper than a cache.
            scored = scoring.reject_non_finite(scoring.predict(annotated, model, compiled=compiled))
            with tel.span("score") as log:  # Spark is lazy: this one pass validates, scores and counts
                report = drift.monitor(
                    scored,
                    unseen=unseen,
                    profile=registry.training_profile(resolved, log),
                    threshold=params.drift_threshold,
                )
                tel.record(
                    {
                        "rows_in": report.rows_in,
                        "rows_scored": report.rows_scored,
                        "rows_rejected": report.rows_rejected,
                    }
                )
                tel.rows(report.rows_in)
                if report.rows_in != report.rows_scored + report.rows_rejected:
                    raise ReconciliationError(
                        f"{report.rows_in} rows in but {report.rows_scored} scored + {report.rows_rejected} rejected; "
                        "nothing was written"
                    )
                schemas.check_reject_fraction(
                    scored, report.rows_in, report.rows_rejected, limit=params.max_reject_fraction, source=str(source)
                )
                if report.drift and not report.judged:
                    log.info(
                        "drift not judged: %d scored rows, fewer than %d", report.rows_scored, drift.DRIFT_MIN_ROWS
                    )
            with tel.span("write", output=str(output)):
                lineage = scoring.Lineage(
                    model_name=resolved.name,
                    model_version=resolved.version,
                    batch_id=batch_id,
                    scored_at=datetime.now(timezone.utc).replace(tzinfo=None),
                    mlflow_run_id=run.info.run_id,
                )
                written = steps.write_batch(spark, scored, report, lineage, output, rejects, source)
                tel.rows(written + report.rows_rejected)
            steps.record_batch(tel, report, written, params.drift_threshold)
    return {
        "rows_in": report.rows_in,
        "rows_scored": report.rows_scored,
        "rows_rejected": report.rows_rejected,
        "model_version": resolved.version,
        "batch_id": batch_id,
        "output": str(output),
        "rejects_table": str(rejects),
        "run_id": run.info.run_id,
        "unseen_sex": report.unseen_sex,
        "drift": report.drift,
        "drifted_features": report.drifted,
    }
