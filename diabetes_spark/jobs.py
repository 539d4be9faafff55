"""The orchestration both the notebooks and the CLI call: read, validate, act, write, summarise."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import functions as F

from diabetes_spark import __version__, evaluation, registry, schemas, scoring, storage, training
from diabetes_spark.errors import InputError, ReconciliationError, RejectThresholdError
from diabetes_spark.params import IngestParams, ScoreParams, TrainParams
from diabetes_spark.platform import local_home
from diabetes_spark.telemetry import COMPONENT_INGEST, COMPONENT_SCORE, COMPONENT_TRAIN, Telemetry
from diabetes_spark.telemetry import start as start_telemetry

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["run_ingest", "run_training", "run_batch_scoring", "check_reject_fraction", "default_batch_id"]

#: Batches smaller than this get a drift score but no drift warning: with ten bins per feature, the
#: population stability index of a few dozen rows is mostly sampling noise.
DRIFT_MIN_ROWS = 100
#: Rounds of the champion gate's optimistic loop (see :func:`_gate`).
GATE_ROUNDS = 5
#: Pause between moving ``champion`` and reading it back: far longer than the gap between another
#: run's last read of the alias and its move, so an overwritten promotion is always noticed.
ALIAS_SETTLE_SECONDS = 1.0
#: Key of the folded linear model (see :func:`scoring.linear_spec`) in the logged model's metadata.
LINEAR_SPEC = "diabetes_spark_linear_spec"


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


@contextmanager
def _job_telemetry(given: Telemetry | None, component: str) -> Iterator[Telemetry]:
    """The run's telemetry: the caller's (it closes it), or one from the environment, closed here.

    Either way a failure is sent with its stack trace (once) and marks the run failed.
    """
    if given is None:
        with start_telemetry(component) as own:
            yield own
        return
    try:
        yield given
    except BaseException as error:
        given.fail(error)
        raise


def _reconcile(what: str, expected: int, written: int) -> None:
    if expected != written:
        raise ReconciliationError(f"{what}: expected to write {expected} rows but the Delta commit wrote {written}")


def run_ingest(spark: SparkSession, params: IngestParams, *, telemetry: Telemetry | None = None) -> dict[str, Any]:
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
    with _job_telemetry(telemetry, COMPONENT_INGEST) as tel:
        return _ingest(spark, params, tel)


def _ingest(spark: SparkSession, params: IngestParams, tel: Telemetry) -> dict[str, Any]:
    source = storage.resolve(params.source)
    target = storage.resolve(params.table)
    rejects = storage.resolve(params.rejects) if params.rejects else target.sibling("_rejects")
    ingest_id = f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    tel.set_dimensions(batch_id=ingest_id)

    with tel.span("read"):
        annotated = _read_annotated(spark, source, "training_raw", (schemas.LABEL,))
    try:
        with tel.span("validate"):
            rows_in, rows_rejected = schemas.reject_summary(annotated)
            tel.record({"rows_in": rows_in, "rows_rejected": rows_rejected})
            check_reject_fraction(
                annotated, rows_in, rows_rejected, limit=params.max_reject_fraction, source=str(source)
            )
        with tel.span("write"):
            written = storage.write_delta(
                schemas.valid_rows(annotated), target, mode=params.mode, expected_rows=rows_in - rows_rejected  # type: ignore[arg-type]
            )
            _reconcile(str(target), rows_in - rows_rejected, written)
            rejected = schemas.rejected_rows(annotated, source=str(source), batch_id=ingest_id)
            rejects_written = storage.write_delta(
                rejected, rejects, mode=params.mode, expected_rows=rows_rejected  # type: ignore[arg-type]
            )
            _reconcile(str(rejects), rows_rejected, rejects_written)
    finally:
        annotated.unpersist()
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


def _read_annotated(spark: SparkSession, ref: storage.TableRef, schema_name: str, required: tuple[str, ...]) -> DataFrame:
    """Read and validate an input, cached: counting, reporting and writing all reuse one read."""
    raw = storage.read_table(spark, ref)
    annotated = schemas.annotate(raw, schemas.load_schema(schema_name), required=required)
    return annotated.persist(StorageLevel.MEMORY_AND_DISK)


def _champion_score(name: str, champion: str, test: DataFrame, metric: str) -> float:
    """The current champion's ``metric`` on this run's held-out rows."""
    resolved = registry.resolve_version(name, version=champion)
    spec = registry.model_metadata(resolved).get(LINEAR_SPEC)
    model = None if spec else registry.load_model(resolved)
    predictions = scoring.predict(test, model, compiled=scoring.spec_column(spec) if spec else None)
    return evaluation.regression_metrics(predictions, label=schemas.LABEL, prediction=training.PREDICTION)[metric]


def run_training(
    spark: SparkSession, params: TrainParams, *, home: Path | None = None, telemetry: Telemetry | None = None
) -> dict[str, Any]:
    """Train, evaluate, log, register and (if better) promote a model, in one MLflow run.

    The run logs every parameter, the data shape, the held-out metrics, the reports (feature
    statistics, plots, coefficients or importances, data quality, feature profile), the input schema
    and the model. The new version gets alias ``challenger``; ``champion`` moves to it only if there
    is none yet or the challenger beats it on this run's held-out rows by ``params.primary_metric``.
    The run ends FINISHED, or FAILED when anything raises (the error propagates).

    Args:
        spark: The session.
        params: Validated training parameters.
        home: Local workspace folder for the default MLflow store (default: :func:`local_home`).
        telemetry: The run's telemetry, owned (and closed) by the caller; default: one started
            from ``$APPLICATIONINSIGHTS_CONNECTION_STRING`` and closed before returning or raising.
            Steps ``read``, ``validate``, ``fit``, ``evaluate`` and ``register`` are its spans.

    Returns:
        ``{"run_id", "experiment_id", "model_name", "model_version", "metrics": {rmse, mae, r2},
        "promoted", "champion_version", "rows_in", "rows_rejected"}``.

    Raises:
        ConfigurationError: The Application Insights connection string is malformed (before any work).
    """
    with _job_telemetry(telemetry, COMPONENT_TRAIN) as tel:
        return _train(spark, params, home or local_home(), tel)


def _train(spark: SparkSession, params: TrainParams, home: Path, tel: Telemetry) -> dict[str, Any]:
    import mlflow

    registry.configure_mlflow(home)
    experiment_id = registry.ensure_experiment(params.experiment, artifact_root=home / "mlartifacts")
    source = storage.resolve(params.training_data)
    tel.set_dimensions(mlflow_experiment_id=experiment_id, model_name=params.model_name)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        tel.set_dimensions(mlflow_run_id=run.info.run_id)
        mlflow.set_tags({"job": "train", "diabetes_spark_version": __version__, "training_data": str(source)})
        mlflow.log_params(dataclasses.asdict(params))
        with tel.span("read", source=str(source)):
            annotated = _read_annotated(spark, source, "training_raw", (schemas.LABEL,))
        try:
            with tel.span("validate"):
                rows_in, rows_rejected = schemas.reject_summary(annotated)
                tel.record({"rows_in": rows_in, "rows_rejected": rows_rejected, "rows_valid": rows_in - rows_rejected})
                check_reject_fraction(annotated, rows_in, rows_rejected, limit=params.max_reject_fraction, source=str(source))
                mlflow.log_metrics({"rows_in": rows_in, "rows_rejected": rows_rejected, "rows_valid": rows_in - rows_rejected})
                mlflow.log_param("input_columns", len(annotated.columns) - 2)
            with tel.span("fit", estimator=params.estimator):
                valid = schemas.valid_rows(annotated).select(*schemas.load_schema("training_raw").fieldNames())
                result = training.fit(valid, params)
                sizes = {"rows_train": result.rows_train, "rows_test": result.rows_test}
                mlflow.log_metrics(sizes)
            with tel.span("evaluate"):
                mlflow.log_metrics(result.metrics)
                if result.best_params:
                    mlflow.log_params({f"best_{k}": v for k, v in result.best_params.items()})
                tel.record({**sizes, **result.metrics})
                _log_reports(annotated, rows_in, rows_rejected, result)
            with tel.span("register") as log:
                spec = scoring.linear_spec(result.model)
                info = registry.log_model(
                    result.model,
                    example=valid.select(*schemas.feature_names()),
                    metadata={LINEAR_SPEC: spec} if spec else None,
                )
                version = registry.register(info.model_uri, params.model_name)
                tel.set_dimensions(model_version=version)
                registry.set_alias(params.model_name, registry.CHALLENGER, version)
                promoted, champion = _gate(params, version, result, log)
                tel.record({"promoted": promoted})
        finally:
            annotated.unpersist()
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


def _log_reports(annotated: DataFrame, rows_in: int, rows_rejected: int, result: training.TrainResult) -> None:
    import mlflow

    quality = evaluation.data_quality_report(annotated, rows_in, rows_rejected)
    profile, statistics = evaluation.profile_and_statistics(result.train)
    with tempfile.TemporaryDirectory() as folder:
        evaluation.write_reports(
            Path(folder),
            model=result.model,
            statistics=statistics,
            predictions=result.predictions,
            quality=quality,
            profile=profile,
            label=schemas.LABEL,
            prediction=training.PREDICTION,
        )
        mlflow.log_artifacts(folder, "reports")
    mlflow.log_dict(json.loads(schemas.load_schema("training_raw").json()), "schema/training_raw.json")


def _judge(params: TrainParams, champion: str | None, result: training.TrainResult) -> tuple[bool, str]:
    """Whether this run's model should replace ``champion``, and why (on this run's held-out rows)."""
    import mlflow

    if champion is None:
        return True, "no champion yet"
    metric = params.primary_metric
    challenger_score = result.metrics[metric]
    champion_score = _champion_score(params.model_name, champion, result.test, metric)
    mlflow.log_metric(f"champion_{metric}", champion_score)
    better = evaluation.is_better(metric, challenger_score, champion_score)
    verdict = "beats" if better else "does not beat"
    return better, f"challenger {metric} {challenger_score:.4f} {verdict} champion v{champion} {champion_score:.4f}"


def _gate(params: TrainParams, version: str, result: training.TrainResult, log: logging.Logger) -> tuple[bool, str]:
    """Move ``champion`` to ``version`` if there is none or it is beaten; record the decision.

    MLflow aliases have no compare-and-set: two training runs at once can both read "no champion"
    (or the same old one) and both promote, the last writer winning even when it is the worse.
    So the gate is optimistic. It re-reads the alias just before moving it (a move made while this
    run was comparing is judged in turn), then waits :data:`ALIAS_SETTLE_SECONDS` and reads it
    again. If another run moved it in between, this run compares itself with that version and
    promotes again only if it beats it. A run stops when the alias holds its own version or one it
    lost to; the pause is longer than another run's read-to-move gap, so a run whose promotion is
    overwritten without a comparison always sees it. At most :data:`GATE_ROUNDS` rounds (each run
    judges on its own held-out rows, which need not agree); the version tag and run tags record
    the final decision.
    """
    import mlflow

    name, metric = params.model_name, params.primary_metric
    current, reason = None, ""
    for _ in range(GATE_ROUNDS):
        current = registry.alias_version(name, registry.CHAMPION)
        if current == version:
            break
        better, reason = _judge(params, current, result)
        if not better:
            break
        if registry.alias_version(name, registry.CHAMPION) != current:
            continue  # moved while this run was comparing: judge the new champion
        registry.set_alias(name, registry.CHAMPION, version)
        time.sleep(ALIAS_SETTLE_SECONDS)
    else:
        current = registry.alias_version(name, registry.CHAMPION)
        reason = f"{reason}; stopped after {GATE_ROUNDS} rounds of concurrent promotions"
        log.warning("model %s v%s: %s", name, version, reason)
    promoted, champion = current == version, current or ""
    mlflow.log_metric(f"challenger_{metric}", result.metrics[metric])
    mlflow.set_tags({"champion_decision": "promoted" if promoted else "kept", "champion_reason": reason})
    registry.version_tags(name, version, {metric: result.metrics[metric], "promoted": promoted})
    log.info("model %s v%s: %s; champion: v%s", name, version, reason, champion)
    return promoted, champion


def default_batch_id(spark: SparkSession, ref: storage.TableRef, raw: DataFrame) -> str:
    """A batch id stable for the input: ``<name>-v<Delta version>``, or ``<name>-<file fingerprint>``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", ref.location.rstrip("/").rsplit("/", 1)[-1])[:80] or "input"
    version = storage.delta_version(spark, ref)
    if version is not None:
        return f"{name}-v{version}"
    return f"{name}-{storage.input_fingerprint(raw)}"


#: What :func:`_monitor`'s own codes count: a scored row, a scored row of unseen SEX, a rejected row.
_STATUS = (("rows_in", "rows_scored"), ("unseen_sex",), ("rows_in", "rows_rejected"))
_PREDICTION_STATS = {"prediction_mean": F.mean, "prediction_std": F.stddev, "prediction_min": F.min, "prediction_max": F.max}


def _monitor(scored: DataFrame, labels: list[str], profile: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Everything the scoring run reports about its rows, in one pass over the scored frame:
    (counts and prediction statistics, rows per drift bin of every profiled feature).

    Each row gets the codes it counts in (:data:`_STATUS`, then, when scored, the joint drift bin codes
    of :class:`evaluation.BinCodes`); one aggregate grouped by code counts them and summarises the
    predictions of the scored rows, five fields whatever the number of bins.
    """
    valid = F.col(schemas.REASON).isNull()
    profile = profile or {"bins": {}}  # no profile: no drift bins
    bins = evaluation.BinCodes(profile, offset=len(_STATUS))
    unseen = F.when(scoring.unseen_category(labels), F.lit(1))
    codes = F.when(valid, F.array(F.lit(0), unseen, *bins.columns)).otherwise(F.array(F.lit(2)))
    code = F.col("code")
    prediction = F.when(code == 0, F.col(scoring.PREDICTION))
    summaries = [fn(prediction).alias(name) for name, fn in _PREDICTION_STATS.items()]
    coded = scored.select(F.explode(codes).alias("code"), scoring.PREDICTION).where(code.isNotNull())
    counted = list(dict.fromkeys(name for names in _STATUS for name in names))
    counts = dict.fromkeys([*counted, *evaluation.bin_names(profile)], 0)
    stats: dict[str, Any] = dict.fromkeys(_PREDICTION_STATS)
    for row in coded.groupBy("code").agg(F.count(F.lit(1)).alias("rows"), *summaries).collect():
        for name in _STATUS[row["code"]] if row["code"] < len(_STATUS) else bins.bins_of(row["code"]):
            counts[name] += row["rows"]
        if row["code"] == 0:
            stats.update({name: row[name] for name in _PREDICTION_STATS})
    stats.update({name: counts.pop(name) for name in counted})
    return stats, {"__rows": stats["rows_scored"], **counts}


def _training_profile(resolved: registry.ResolvedModel, log: logging.Logger) -> dict[str, Any] | None:
    """The feature profile logged with the model's training run, if there is one."""
    import mlflow

    try:
        return mlflow.artifacts.load_dict(f"runs:/{resolved.run_id}/reports/feature_profile.json")
    except Exception as e:  # a model trained elsewhere may have none: drift is then not scored
        log.warning("no feature profile for %s (training run %s): drift not scored (%s)", resolved.uri, resolved.run_id, e)
        return None


def run_batch_scoring(
    spark: SparkSession, params: ScoreParams, *, home: Path | None = None, telemetry: Telemetry | None = None
) -> dict[str, Any]:
    """Score a table with a registered model and write predictions with lineage, once per batch.

    The model version is resolved once (by number, or by alias, default ``champion``). Input rows
    are validated against the scoring schema; rejected rows go to ``params.rejects`` (default
    ``<output>_rejects``) with their reasons. Predictions and rejects of ``batch_id`` replace any
    earlier rows of the same batch atomically (Delta ``replaceWhere``), so a rerun never
    duplicates. Counts, prediction statistics, unseen SEX values and drift per feature are computed
    in one pass and ``rows_in == rows_scored + rows_rejected`` is checked before anything is written;
    everything is logged to an MLflow run of ``params.experiment``.

    Args:
        spark: The session.
        params: Validated scoring parameters.
        home: Local workspace folder for the default MLflow store (default: :func:`local_home`).
        telemetry: The run's telemetry, owned (and closed) by the caller; default: one started
            from ``$APPLICATIONINSIGHTS_CONNECTION_STRING`` and closed before returning or raising.
            Steps ``load_model``, ``read``, ``validate``, ``score`` and ``write`` are its spans.

    Returns:
        ``{"rows_in", "rows_scored", "rows_rejected", "model_version", "batch_id", "output",
        "rejects_table", "run_id", "drift", "drifted_features", "unseen_sex"}``.

    Raises:
        ConfigurationError: The Application Insights connection string is malformed (before any work).
    """
    with _job_telemetry(telemetry, COMPONENT_SCORE) as tel:
        return _score(spark, params, home or local_home(), tel)


def _score(spark: SparkSession, params: ScoreParams, home: Path, tel: Telemetry) -> dict[str, Any]:
    import mlflow

    registry.configure_mlflow(home)
    source = storage.resolve(params.input)
    output = storage.resolve(params.output)
    rejects = storage.resolve(params.rejects) if params.rejects else output.sibling("_rejects")
    tel.set_dimensions(model_name=params.model_name)
    resolved = registry.resolve_version(params.model_name, version=params.model_version, alias=params.model_alias)
    tel.set_dimensions(model_version=resolved.version)
    experiment_id = registry.ensure_experiment(params.experiment, artifact_root=home / "mlartifacts")
    tel.set_dimensions(mlflow_experiment_id=experiment_id)
    with tel.span("read", source=str(source)):
        raw = storage.read_table(spark, source, pinned=True)  # read by each pass below: the same rows each time
        scoring.check_input_columns(raw.columns)
        batch_id = params.batch_id or default_batch_id(spark, source, raw)
    tel.set_dimensions(batch_id=batch_id)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"score-{batch_id}") as run:
        tel.set_dimensions(mlflow_run_id=run.info.run_id)
        mlflow.set_tags({"job": "batch_score", "diabetes_spark_version": __version__, "batch_id": batch_id})
        mlflow.log_params({**dataclasses.asdict(params), "batch_id": batch_id, "resolved_model_version": resolved.version})
        with tel.span("load_model", model_uri=resolved.uri):
            # A linear model's folded coefficients travel in its metadata: no PipelineModel load then.
            spec = registry.model_metadata(resolved).get(LINEAR_SPEC)
            model = None if spec else registry.load_model(resolved)
            compiled = scoring.spec_column(spec) if spec else scoring.compile_linear(model)
            labels = list(spec["sex_weights"]) if spec else scoring.category_labels(model)
            mlflow.set_tag("scoring_path", "column_expression" if compiled is not None else "pipeline_transform")
        with tel.span("validate"):
            annotated = schemas.annotate(raw, schemas.load_schema("scoring_input"))
        # Not cached: re-reading the (pinned) input and re-scoring it is cheaper than building a cache
        # of the scored frame (BENCHMARKS.md: scoring / io_floor 1.75 at 1e6 rows, 2.0 with the cache).
        scored = scoring.reject_non_finite(scoring.predict(annotated, model, compiled=compiled))
        # One pass validates, scores and counts (Spark is lazy): rejects are known before any write.
        with tel.span("score") as log:
            profile = _training_profile(resolved, log)
            stats, bin_counts = _monitor(scored, labels, profile)
            rows_in, rows_scored, rows_rejected = stats.pop("rows_in"), stats.pop("rows_scored"), stats.pop("rows_rejected")
            tel.record({"rows_in": rows_in, "rows_scored": rows_scored, "rows_rejected": rows_rejected})
            if rows_in != rows_scored + rows_rejected:
                raise ReconciliationError(
                    f"{rows_in} rows in but {rows_scored} scored + {rows_rejected} rejected; nothing was written"
                )
            check_reject_fraction(scored, rows_in, rows_rejected, limit=params.max_reject_fraction, source=str(source))
            drift = evaluation.psi_from_counts(profile, bin_counts) if profile else {}
            judged = rows_scored >= DRIFT_MIN_ROWS
            drifted = sorted(f for f, v in drift.items() if v > params.drift_threshold) if judged else []
            if drift and not judged:
                log.info("drift not judged: %d scored rows, fewer than %d", rows_scored, DRIFT_MIN_ROWS)
        with tel.span("write", output=str(output)) as log:
            lineage = scoring.Lineage(
                model_name=resolved.name,
                model_version=resolved.version,
                batch_id=batch_id,
                scored_at=datetime.now(timezone.utc).replace(tzinfo=None),
                mlflow_run_id=run.info.run_id,
            )
            # With no rejects counted in the (pinned) input, every row is written: the validity of each
            # row is not evaluated again.
            valid = scored.drop(schemas.REASON, schemas.RECORD) if rows_rejected == 0 else schemas.valid_rows(scored)
            predictions = scoring.with_lineage(valid, lineage)
            replace = f"batch_id = '{batch_id}'"
            written = storage.write_delta(
                predictions,
                output,
                mode="overwrite",
                replace_where=replace,
                merge_schema=True,
                expected_rows=rows_scored,
                table_properties=scoring.PREDICTIONS_TABLE_PROPERTIES,
                partition_by=scoring.BATCH_PARTITIONING,
            )
            _reconcile(str(output), rows_scored, written)
            if rows_rejected == 0 and storage.table_exists(spark, rejects) and not storage.holds_rows(spark, rejects, replace):
                log.debug("no rejects, and none of batch %s to replace in %s: nothing to write", batch_id, rejects)
            else:
                rejected = schemas.rejected_rows(scored, source=str(source), batch_id=batch_id)
                if rows_rejected == 0:  # known from the counts: no pass over the input to find none
                    rejected = rejected.limit(0)
                rejects_written = storage.write_delta(
                    rejected,
                    rejects,
                    mode="overwrite",
                    replace_where=replace,
                    expected_rows=rows_rejected,
                    partition_by=scoring.BATCH_PARTITIONING,
                )
                _reconcile(str(rejects), rows_rejected, rejects_written)
        metrics = {"rows_in": rows_in, "rows_scored": rows_scored, "rows_rejected": rows_rejected}
        metrics.update({k: v for k, v in stats.items() if v is not None})
        metrics.update({f"psi_{f}": v for f, v in drift.items()})
        mlflow.log_metrics(metrics)
        tel.record({k: v for k, v in metrics.items() if k not in ("rows_in", "rows_scored", "rows_rejected")})
        tel.record({"rows_written": written})
        mlflow.set_tag("drifted_features", ",".join(drifted) or "none")
        if drifted:
            tel.logger().warning(
                "drift: population stability index above %g for %s (%s)",
                params.drift_threshold,
                ", ".join(drifted),
                ", ".join(f"{f}={drift[f]:.3f}" for f in drifted),
            )
    return {
        "rows_in": rows_in,
        "rows_scored": rows_scored,
        "rows_rejected": rows_rejected,
        "model_version": resolved.version,
        "batch_id": batch_id,
        "output": str(output),
        "rejects_table": str(rejects),
        "run_id": run.info.run_id,
        "unseen_sex": stats["unseen_sex"],
        "drift": drift,
        "drifted_features": drifted,
    }
