"""The training job: read, validate, fit, evaluate, log and register a model, and promote it to
``champion`` only if it beats the current one."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark import (
    drift,
    evaluation,
    ledger,
    promotion,
    provenance,
    registry,
    schemas,
    scoring,
    spark_models,
    storage,
    training,
    validation,
)
from diabetes_spark.errors import ValidationFailedError
from diabetes_spark.jobs import tables
from diabetes_spark.jobs.recorder import recording
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import local_home
from diabetes_spark.telemetry import COMPONENT_TRAIN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.params import TrainParams
    from diabetes_spark.telemetry import Telemetry


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
    The new version gets alias ``challenger``; it is validated against the thresholds and the
    champion (:func:`promotion.validate`; the verdict is recorded on the run and the version), and
    ``champion`` moves to it only if it passes (unless in dry_run) and wins
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
        "promoted", "champion_version", "validation", "rows_in", "rows_rejected"}``; ``validation`` is
        the verdict (``passed``, ``failed`` in dry_run, ``disabled``).

    Raises:
        ValidationFailedError: ``validation_mode`` is ``enabled`` and the new version missed a
            threshold: it stays registered as ``challenger``, ``champion`` does not move.
    """
    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    staged = spark_models.removing_staged_copies()  # the champion's copy, loaded to compare with
    with recording(telemetry, COMPONENT_TRAIN, params.telemetry_backend) as record, location.active(), staged:
        registry.check_model_name(params.model_name)
        moves = ledger.start(spark, params.alias_ledger, home or local_home(), params.model_name)
        spark_models.check_staging(spark, params.dfs_tmpdir)  # over Connect the model needs a shared folder
        source = storage.resolve(params.training_data)
        experiment_id = location.ensure_experiment(params.experiment)
        record.identify(mlflow_experiment_id=experiment_id, model_name=params.model_name)
        tags = {"job": "train", "training_data": str(source)}
        with record.run(experiment_id, "train", tags=tags, params=dataclasses.asdict(params)) as run_id:
            required = (schemas.LABEL,)
            with tables.read_annotated(
                spark, source, schema="training_raw", required=required, recorder=record, context=provenance.TRAINING
            ) as rows:
                with record.step("validate"):
                    rows_in, rows_rejected = tables.validate(rows, limit=params.max_reject_fraction, source=source)
                    counts = {"rows_in": rows_in, "rows_rejected": rows_rejected, "rows_valid": rows_in - rows_rejected}
                    record.record(counts, rows=rows_in)
                    record.params({"input_columns": len(rows.columns) - 2})  # less the reason and record columns
                with record.step("fit", estimator=params.estimator), training.refusals(params.estimator, source):
                    valid = schemas.valid_rows(rows).select(*schemas.load_schema("training_raw").fieldNames())
                    result = training.fit(valid, params)
                    record.rows(result.rows_train)
                    provenance.log_splits(record.inputs[0], seed=params.seed, train_fraction=params.train_fraction)
                with record.step("evaluate"):
                    record.record({"rows_train": result.rows_train, "rows_test": result.rows_test, **result.metrics})
                    if result.best_params:
                        record.params({f"best_{k}": v for k, v in result.best_params.items()})
                    log_reports(rows, rows_in, rows_rejected, result)
                with record.step("register") as log:  # register, validate, promote: one step, one span
                    version = register(params, result, valid, moves, run_id)
                    record.identify(model_version=version)
                    verdict = promotion.validate(params, result)
                    validation.record(verdict, model_name=params.model_name, version=version)
                    log.info("validation of %s v%s: %s", params.model_name, version, verdict.description())
                    if verdict.blocks:
                        record.record({"promoted": 0})
                        record.tag(champion_decision="kept", champion_reason="failed validation")
                        raise ValidationFailedError(
                            f"model {params.model_name} v{version} failed validation and stays the challenger; "
                            f"champion unchanged: {' '.join(verdict.failures)}"
                        )
                    promoted, champion = promotion.promote_if_better(
                        params,
                        version,
                        result,
                        log,
                        known={verdict.champion_version: verdict.champion},
                        moves=moves,
                        run_id=run_id,
                    )
                    record.record({"promoted": int(promoted)})  # a number: MLflow 2 refuses a bool metric
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_name": params.model_name,
        "model_version": version,
        "metrics": {k: result.metrics[k] for k in ("rmse", "mae", "r2")},
        "promoted": promoted,
        "champion_version": champion,
        "validation": verdict.verdict,
        "rows_in": rows_in,
        "rows_rejected": rows_rejected,
    }


def log_reports(annotated: DataFrame, rows_in: int, rows_rejected: int, result: training.TrainResult) -> None:
    """The run's report artifacts (data quality, statistics, profile, plots) and the input schema."""
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


def register(
    params: TrainParams, result: training.TrainResult, valid: DataFrame, moves: ledger.Ledger, run_id: str
) -> str:
    """Log the model (with its folded linear spec, if linear), register it, alias it ``challenger``
    (a row of the alias ledger)."""
    spec = scoring.linear_spec(result.model)
    info = spark_models.log_model(
        result.model,
        example=valid.select(*schemas.feature_names()),
        metadata={scoring.LINEAR_SPEC: spec} if spec else None,
        dfs_tmpdir=params.dfs_tmpdir,
    )
    version = registry.register(info.model_uri, params.model_name)
    reason = f"registered by training run {run_id}"
    moves.move(
        params.model_name,
        registry.CHALLENGER,
        version,
        action=ledger.GATE,
        reason=reason,
        metrics=result.metrics,
        run_id=run_id,
    )
    return version
