"""The batch-scoring job: read, validate, score with a registered model, write predictions with
lineage and rejects with reasons (once per batch), and record counts, statistics and drift."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark import drift, ledger, provenance, registry, schemas, scoring, shadow, spark_models, storage
from diabetes_spark.errors import ReconciliationError
from diabetes_spark.jobs import tables
from diabetes_spark.jobs.recorder import Recorder, recording
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import local_home
from diabetes_spark.telemetry import COMPONENT_SCORE

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import Column, DataFrame, SparkSession

    from diabetes_spark.params import ScoreParams
    from diabetes_spark.storage import TableRef
    from diabetes_spark.telemetry import Telemetry


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

    With ``params.shadow`` and a ``challenger`` on another version, the challenger scores the same
    rows in the same frame; its rows go to ``params.shadow_output`` (default ``<output>_shadow``),
    replacing the batch there too, after the champion's, and the comparison is logged and returned.

    Args: as :func:`~diabetes_spark.jobs.train.run_training`; the telemetry's spans are ``read``,
        ``load_model``, ``validate``, ``score`` and ``write``.

    Returns:
        ``{"rows_in", "rows_scored", "rows_rejected", "model_version", "batch_id", "output",
        "rejects_table", "run_id", "unseen_sex", "drift", "drifted_features"}``; ``drift`` maps each
        feature to its stability index, or says why drift was not judged (too few rows). With
        ``shadow``: ``"shadow"``, the comparison (``shadow_version``, ``output``, ``rows_written``,
        ``shadow_mean_abs_diff``, ``shadow_max_abs_diff``, ``shadow_corr``, ``shadow_psi``,
        ``shadow_frac_differing``, ...) or the one line saying why it did not run.
    """
    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    staged = spark_models.removing_staged_copies()  # the models' copies go as the job ends
    with recording(telemetry, COMPONENT_SCORE, params.telemetry_backend) as record, location.active(), staged:
        registry.check_model_name(params.model_name)
        ledger.start(spark, params.alias_ledger, home or local_home(), params.model_name)  # records outside moves
        source, output = storage.resolve(params.input), storage.resolve(params.output)
        rejects = tables.rejects_table(params.rejects, output)
        record.identify(model_name=params.model_name)
        resolved = registry.resolve_version(params.model_name, version=params.model_version, alias=params.model_alias)
        record.identify(model_version=resolved.version)
        challenger, shadow_output, not_run = shadow_plan(params, resolved, output, record)
        experiment_id = location.ensure_experiment(params.experiment)
        record.identify(mlflow_experiment_id=experiment_id)
        with record.step("read", source=str(source)):
            raw, read = provenance.read_pinned(spark, source)  # every pass below reads the same rows
            scoring.check_input_columns(raw.columns)
            if challenger is not None:
                shadow.check_input_columns(raw.columns)
            batch_id = params.batch_id or storage.default_batch_id(
                spark, source, raw, version=read.version, fingerprint=read.fingerprint
            )
        record.identify(batch_id=batch_id)
        run_params = {**dataclasses.asdict(params), "batch_id": batch_id, "resolved_model_version": resolved.version}
        tags = {"job": "batch_score", "batch_id": batch_id}
        with record.run(experiment_id, f"score-{batch_id}", tags=tags, params=run_params) as run_id:
            record.input(read, context=provenance.SCORING)
            with record.step("load_model", model_uri=resolved.uri, about=f"model {resolved.name} v{resolved.version}"):
                model, compiled, unseen = load_scorer(spark, resolved, params.dfs_tmpdir)
                record.tag(scoring_path="column_expression" if compiled is not None else "pipeline_transform")
                if challenger is not None:
                    shadow_model, shadow_compiled, _ = load_scorer(spark, challenger, params.dfs_tmpdir)
                    record.tag(shadow_version=challenger.version)
            with record.step("validate"):
                annotated = schemas.annotate(raw, schemas.load_schema("scoring_input"))
            if challenger is not None:  # both models score the same pinned read, one frame
                annotated = shadow.with_challenger(annotated, shadow_model, compiled=shadow_compiled)
            # Not cached: re-reading the pinned input and scoring it again is cheaper than a cache.
            both = scoring.reject_non_finite(
                scoring.predict(annotated, model, compiled=compiled), added=(shadow.SHADOW,)
            )
            scored = both.drop(shadow.SHADOW)  # the champion's rows, as without --shadow
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            lineage = scoring.Lineage(resolved.name, resolved.version, batch_id, now, run_id)
            batch = batch_frames(scored, lineage, source=source, all_valid=False)
            destinations = [(output, batch[0]), (rejects, batch[1])]
            if challenger is not None and shadow_output is not None:
                shadow_lineage = dataclasses.replace(lineage, model_version=challenger.version)
                shadow_batch = shadow.shadow_rows(schemas.valid_rows(both), shadow_lineage)
                destinations.append((shadow_output, shadow_batch))
            tables.check_destinations(spark, source, *destinations)
            with record.step("score", about=f"input {source}") as log:  # lazy: this one pass validates, scores, counts
                profile = registry.training_profile(resolved, log)
                report = monitor_batch(
                    scored, both, shadowed=challenger is not None, unseen=unseen, profile=profile, params=params
                )
                counts = {"rows_in": report.rows_in, "rows_scored": report.rows_scored}
                record.record({**counts, "rows_rejected": report.rows_rejected}, rows=report.rows_in)
                check_counts(scored, report, limit=params.max_reject_fraction, source=source)
                if not report.judged:
                    log.info("drift not judged: %s", _not_judged(report))
            with record.step("write", output=str(output)):
                written = write_batch(spark, scored, report, lineage, output=output, rejects=rejects, source=source)
                record.rows(written + report.rows_rejected)
            record_batch(record, report, written=written, threshold=params.drift_threshold)
            compared: dict[str, Any] | str = not_run
            if challenger is not None and shadow_output is not None:
                with record.step("shadow", output=str(shadow_output)):
                    compared = write_shadow(shadow_batch, report, shadow_output, batch_id)
                    compared["shadow_version"] = challenger.version
                    record.record(
                        {k: v for k, v in compared.items() if k.startswith("shadow_") and k != "shadow_version"}
                    )
    return {
        "rows_in": report.rows_in,
        "rows_scored": report.rows_scored,
        "rows_rejected": report.rows_rejected,
        "model_version": resolved.version,
        "batch_id": batch_id,
        "output": str(output),
        "rejects_table": str(rejects),
        "run_id": run_id,
        "unseen_sex": report.unseen_sex,
        "drift": report.drift if report.judged else f"not judged: {_not_judged(report)}",
        "drifted_features": report.drifted,
        **({"shadow": compared} if params.shadow == "true" else {}),
    }


def shadow_plan(
    params: ScoreParams, resolved: registry.ResolvedModel, output: TableRef, record: Recorder
) -> tuple[registry.ResolvedModel | None, TableRef | None, str]:
    """``(challenger, shadow table, "")`` when ``--shadow`` has a challenger to run, else
    ``(None, None, why not)`` with that one line logged."""
    if params.shadow != "true":
        return None, None, ""
    version = registry.alias_version(params.model_name, registry.CHALLENGER)
    if version is None or version == resolved.version:
        why = f"shadow scoring not run: model {params.model_name} has no challenger other than v{resolved.version}"
        record.log().info(why)
        return None, None, why
    shadow_output = storage.resolve(params.shadow_output) if params.shadow_output else output.sibling("_shadow")
    return registry.resolve_version(params.model_name, version=version), shadow_output, ""


def monitor_batch(
    scored: DataFrame,
    both: DataFrame,
    *,
    shadowed: bool,
    unseen: Column,
    profile: dict[str, Any] | None,
    params: ScoreParams,
) -> drift.BatchReport:
    """The monitor's one pass over the batch (:func:`drift.monitor`); ``shadowed``, over ``both``
    models' predictions, so the same pass also compares them (:func:`shadow.aggregates`, :func:`shadow.codes`)."""
    threshold = params.drift_threshold
    if not shadowed:
        return drift.monitor(scored, unseen=unseen, profile=profile, threshold=threshold)
    compare = shadow.aggregates(tolerance=params.shadow_tolerance)
    return drift.monitor(
        both,
        unseen=unseen,
        profile=profile,
        threshold=threshold,
        carried=[shadow.SHADOW],
        extra=compare,
        codes=shadow.codes(),
    )


def write_shadow(
    rows: DataFrame, report: drift.BatchReport, ref: TableRef, batch_id: str, **once: Any
) -> dict[str, Any]:
    """Replace the batch in the shadow table with the challenger's rows; the comparison of the two
    models' predictions was taken in the monitor's pass (:func:`shadow.aggregates`). ``once``
    (``once_as``, ``once_version``) makes the write idempotent (:func:`delta_writes.write_delta`)."""
    replace = f"batch_id = '{batch_id}'"
    layout = {"mode": "overwrite", "replace_where": replace, "partition_by": scoring.BATCH_PARTITIONING, **once}
    properties = scoring.PREDICTIONS_TABLE_PROPERTIES
    written = tables.write(rows, ref, expected=report.rows_scored, table_properties=properties, **layout)
    return {"output": str(ref), "rows_written": written, **shadow.comparison(report.extra, report.caller_codes)}


def _not_judged(report: drift.BatchReport) -> str:
    return f"{report.rows_scored} rows scored, fewer than {drift.DRIFT_MIN_ROWS}"


def load_scorer(
    spark: SparkSession, resolved: registry.ResolvedModel, dfs_tmpdir: str = ""
) -> tuple[Any, Column | None, Column]:
    """``(PipelineModel or None, compiled Column or None, unseen-SEX Column)`` of a resolved version.

    A linear model's folded coefficients travel in its metadata: no ``PipelineModel`` load then.
    """
    spec = registry.model_metadata(resolved).get(scoring.LINEAR_SPEC)
    if spec:
        return None, scoring.spec_column(spec), scoring.unseen_category(list(spec["sex_weights"]))
    model = spark_models.load_model(spark, resolved, dfs_tmpdir=dfs_tmpdir)
    return model, scoring.compile_linear(model), scoring.unseen_category(scoring.category_labels(model))


def check_counts(scored: DataFrame, report: drift.BatchReport, *, limit: float, source: TableRef) -> None:
    """Nothing is written unless rows in = scored + rejected, and the rejected share is within ``limit``."""
    if report.rows_in != report.rows_scored + report.rows_rejected:
        raise ReconciliationError(
            f"{report.rows_in} rows in but {report.rows_scored} scored + {report.rows_rejected} rejected; "
            "nothing was written"
        )
    schemas.check_reject_fraction(scored, report.rows_in, report.rows_rejected, limit=limit, source=str(source))


def write_batch(
    spark: SparkSession,
    scored: DataFrame,
    report: drift.BatchReport,
    lineage: scoring.Lineage,
    *,
    output: TableRef,
    rejects: TableRef,
    source: TableRef,
    **once: Any,
) -> int:
    """Replace the batch's predictions, then its rejects; returns the predictions written. A failure
    between the two leaves the predictions of the batch; its rerun (the same ``batch_id``) replaces
    both, so it repairs the batch exactly. ``once`` (``once_as``, ``once_version``) makes both writes
    idempotent as well (:func:`delta_writes.write_delta`)."""
    replace = f"batch_id = '{lineage.batch_id}'"
    layout = {"mode": "overwrite", "replace_where": replace, "partition_by": scoring.BATCH_PARTITIONING, **once}
    # With no rejects counted in the pinned input, every row is written: validity is not evaluated again.
    predictions, rejected = batch_frames(scored, lineage, source=source, all_valid=report.rows_rejected == 0)
    properties = scoring.PREDICTIONS_TABLE_PROPERTIES
    written = tables.write(predictions, output, expected=report.rows_scored, table_properties=properties, **layout)
    if (
        report.rows_rejected == 0
        and storage.table_exists(spark, rejects)
        and not storage.may_hold_rows(spark, rejects, replace)
    ):
        return written  # no rejects, and none of this batch to replace
    if report.rows_rejected == 0:  # known from the counts: no pass over the input to find none
        rejected = rejected.limit(0)
    tables.write(rejected, rejects, expected=report.rows_rejected, **layout)
    return written


def batch_frames(
    scored: DataFrame, lineage: scoring.Lineage, *, source: TableRef, all_valid: bool
) -> tuple[DataFrame, DataFrame]:
    """The batch's predictions (with lineage) and rejects (with reasons), as they are written."""
    valid = scored.drop(schemas.REASON, schemas.RECORD) if all_valid else schemas.valid_rows(scored)
    rejected = schemas.rejected_rows(scored, source=str(source), batch_id=lineage.batch_id)
    return scoring.with_lineage(valid, lineage), rejected


def record_batch(record: Recorder, report: drift.BatchReport, *, written: int, threshold: float) -> None:
    """The batch's prediction statistics, drift and written rows; a warning on drift."""
    metrics = {"unseen_sex": report.unseen_sex, **{k: v for k, v in report.statistics.items() if v is not None}}
    metrics.update({f"psi_{feature}": value for feature, value in report.drift.items()})
    record.record({**metrics, "rows_written": written})
    record.tag(drifted_features=",".join(report.drifted) or "none")
    if report.drifted:
        record.log().warning(
            "drift: population stability index above %g for %s (%s)",
            threshold,
            ", ".join(report.drifted),
            ", ".join(f"{f}={report.drift[f]:.3f}" for f in report.drifted),
        )
