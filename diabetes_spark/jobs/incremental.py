"""Incremental batch scoring (``score --incremental``): only the rows of a Delta input committed since
the last incremental run into the output, each scored exactly once.

Structured Streaming keeps the position: the Delta source with ``trigger(availableNow=True)`` and a
checkpoint (:mod:`.stream`) reads what arrived since the last run, in one or more micro-batches,
and stops. Each micro-batch is scored as a whole-table batch is (validation, rejects, lineage, drift,
shadow), through :mod:`.score`'s steps, in an MLflow run of its own; its writes carry Delta's
``txnAppId`` (the query id) and ``txnVersion`` (the epoch), so a micro-batch replayed after a kill
or a failure commits nothing twice. With the input's change data feed on, updated rows are read as
changes and scored again; without it, a commit that changed or deleted rows fails the run.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from diabetes_spark import registry, schemas, scoring, shadow, spark_models, storage
from diabetes_spark.errors import ParamError
from diabetes_spark.jobs import score, stream, tables
from diabetes_spark.jobs.recorder import Recorder, recording
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import is_connect, local_home
from diabetes_spark.telemetry import COMPONENT_SCORE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pyspark.sql import Column, DataFrame, SparkSession

    from diabetes_spark.params import ScoreParams
    from diabetes_spark.storage import TableRef
    from diabetes_spark.telemetry import Telemetry

_log = logging.getLogger(__name__)

#: The change data feed's columns; of its change types, the rows to score.
_CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
_SCORED_CHANGES = ("insert", "update_postimage")


@dataclass(frozen=True)
class Plan:
    """What a micro-batch needs, resolved once at the start. Plain values only: over Spark Connect the
    micro-batch function runs in a Python worker of the server, which receives it pickled."""

    params: ScoreParams
    source: TableRef
    output: TableRef
    rejects: TableRef
    resolved: registry.ResolvedModel
    challenger: registry.ResolvedModel | None
    shadow_output: TableRef | None
    experiment_id: str
    location: MlflowLocation
    checkpoint: str
    run_tag: str
    change_feed: bool


def run_incremental_scoring(
    spark: SparkSession,
    params: ScoreParams,
    *,
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
    telemetry: Telemetry | None = None,
) -> dict[str, Any]:
    """Score what is new in the Delta input ``params.input`` since the last incremental run into
    ``params.output``, exactly once, and stop.

    Returns:
        The totals of :func:`~diabetes_spark.jobs.score.run_batch_scoring`'s summary over the run's
        micro-batches, with ``batches`` (each one's ``batch_id``, counts and MLflow ``run_id``) and
        ``checkpoint``. With nothing new: zero rows, no batch, no commit and no MLflow run (a run
        records a batch; there is none), and ``incremental`` says so.

    Raises:
        InputError: The input is not a Delta table, or changed or deleted rows without its change
            data feed on.
        WriteConflictError: Another incremental run into the same output is active.
    """
    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    staged = spark_models.removing_staged_copies()  # the models' copies go as the stream ends
    with recording(telemetry, COMPONENT_SCORE, params.telemetry_backend) as record, location.active(), staged:
        plan = _plan(spark, params, location, record)
        with record.step("stream", about=f"input {plan.source}") as log:
            stream.check_workers(spark)
            log.info("incremental: checkpoint %s", plan.checkpoint)
            own = None if is_connect(spark) else record  # over Connect the batches run on the server
            failures: list[BaseException] = []
            with stream.one_run_at_a_time(spark):
                _stream(spark, plan, lambda batch, epoch: _guarded(plan, own, failures, batch, epoch), failures)
        summary = _summary(plan)
        if not summary["batches"]:
            log.info(summary["incremental"])
        record.record({"rows_in": summary["rows_in"], "batches": len(summary["batches"])}, rows=summary["rows_in"])
    return summary


def _plan(spark: SparkSession, params: ScoreParams, location: MlflowLocation, record: Recorder) -> Plan:
    """Everything checked and resolved before the stream starts: a failure here writes nothing."""
    registry.check_model_name(params.model_name)
    source, output = storage.resolve(params.input), storage.resolve(params.output)
    if source.kind not in ("delta", "table"):
        raise ParamError(
            f"incremental scoring reads a Delta table; input {source} is a {source.kind} file. Load it into a Delta "
            "table (diabetes-spark ingest), or score it without incremental"
        )
    rejects = tables.rejects_table(params.rejects, output)
    resolved = registry.resolve_version(params.model_name, version=params.model_version, alias=params.model_alias)
    record.identify(model_name=params.model_name, model_version=resolved.version)
    challenger, shadow_output, _ = score.shadow_plan(params, resolved, output, record)
    experiment_id = location.ensure_experiment(params.experiment)
    with record.step("read", source=str(source)):
        raw = storage.read_table(spark, source)
        scoring.check_input_columns(raw.columns)
        if challenger is not None:
            shadow.check_input_columns(raw.columns)
        change_feed = stream.change_feed(spark, source)
    plan = Plan(
        params=params,
        source=source,
        output=output,
        rejects=rejects,
        resolved=resolved,
        challenger=challenger,
        shadow_output=shadow_output,
        experiment_id=experiment_id,
        location=location,
        checkpoint=stream.location(spark, params.checkpoint_location, output),
        run_tag=uuid.uuid4().hex,
        change_feed=change_feed,
    )
    with record.step("load_model", about=f"model {resolved.name} v{resolved.version}"):
        _check_destinations(spark, plan, raw.limit(0))
    return plan


def _check_destinations(spark: SparkSession, plan: Plan, empty: DataFrame) -> None:
    """The tables a micro-batch writes can take its frames (checked on an empty frame of the input's
    columns, scored the same way), and the models load."""
    scored, shadow_batch, _ = _scored(spark, plan, empty, plan.params.dfs_tmpdir)
    lineage = scoring.Lineage(plan.resolved.name, plan.resolved.version, "check", datetime.now(), "")
    predictions, rejected = score.batch_frames(scored.drop(shadow.SHADOW), lineage, source=plan.source, all_valid=False)
    destinations = [(plan.output, predictions), (plan.rejects, rejected)]
    if plan.shadow_output is not None and shadow_batch is not None:
        destinations.append((plan.shadow_output, shadow.shadow_rows(shadow_batch, lineage)))
    tables.check_destinations(spark, plan.source, *destinations)


def _scored(
    spark: SparkSession, plan: Plan, raw: DataFrame, dfs_tmpdir: str
) -> tuple[DataFrame, DataFrame | None, Column]:
    """``raw`` validated and scored by the champion (and the challenger, in :data:`shadow.SHADOW`),
    as :func:`~diabetes_spark.jobs.score.run_batch_scoring` scores a batch; with the valid rows of
    both when shadow scoring runs, and the champion's unseen-SEX test."""
    model, compiled, unseen = score.load_scorer(spark, plan.resolved, dfs_tmpdir)
    annotated = schemas.annotate(raw, schemas.load_schema("scoring_input"))
    if plan.challenger is not None:
        shadow_model, shadow_compiled, _ = score.load_scorer(spark, plan.challenger, dfs_tmpdir)
        annotated = shadow.with_challenger(annotated, shadow_model, compiled=shadow_compiled)
    both = scoring.reject_non_finite(scoring.predict(annotated, model, compiled=compiled), added=(shadow.SHADOW,))
    return both, (schemas.valid_rows(both) if plan.challenger is not None else None), unseen


def _stream(
    spark: SparkSession, plan: Plan, function: Callable[[DataFrame, int], None], failures: list[BaseException]
) -> None:
    """Start the query and wait for it to end; a failure raised as what caused it (a micro-batch of
    this process: its own error)."""
    try:
        query = stream.start(
            spark,
            plan.source,
            checkpoint=plan.checkpoint,
            change_feed=plan.change_feed,
            name=f"diabetes-spark-{plan.run_tag}",
            function=function,
        )
        query.awaitTermination()
    except Exception as e:
        if failures:
            raise failures[0] from e
        stream.raise_known(e, plan.source, plan.output, plan.checkpoint)
        raise


def _guarded(plan: Plan, own: Recorder | None, failures: list[BaseException], batch: DataFrame, epoch: int) -> None:
    """:func:`score_micro_batch`, its failure kept for the caller in this process (the stream
    carries only its text)."""
    try:
        score_micro_batch(plan, own, batch, epoch)
    except BaseException as e:
        failures.append(e)
        raise


def score_micro_batch(plan: Plan, own: Recorder | None, batch: DataFrame, epoch: int) -> None:
    """Score one micro-batch as a batch of its own, in an MLflow run of its own, writing with the
    streaming query's id and ``epoch`` as Delta's transaction (``own``: the run's recorder when
    this is the process that started it)."""
    rows = batch
    if plan.change_feed:
        rows = batch.where(batch["_change_type"].isin(*_SCORED_CHANGES)).drop(*_CHANGE_COLUMNS)
    if rows.isEmpty():  # a batch of deletes only: nothing to score, nothing to commit
        return
    spark = rows.sparkSession
    once = {"once_as": stream.query_id(spark, plan.checkpoint), "once_version": epoch}
    batch_id = stream.batch_id(spark, plan.checkpoint, plan.source, epoch)
    if own is not None:
        _score_batch(plan, own, rows, batch_id, once)
        return
    with recording(None, COMPONENT_SCORE, plan.params.telemetry_backend) as record, plan.location.active():
        _score_batch(plan, record, rows, batch_id, once)


def _score_batch(plan: Plan, record: Recorder, raw: DataFrame, batch_id: str, once: dict[str, Any]) -> None:
    """The steps of a whole-table batch (:func:`~diabetes_spark.jobs.score.run_batch_scoring`) on ``raw``."""
    spark, params, resolved = raw.sparkSession, plan.params, plan.resolved
    record.identify(batch_id=batch_id)
    run_params = {**dataclasses.asdict(params), "batch_id": batch_id, "resolved_model_version": resolved.version}
    tags = {"job": "batch_score", "batch_id": batch_id, "incremental_run": plan.run_tag}
    with record.run(plan.experiment_id, f"score-{batch_id}", tags=tags, params=run_params) as run_id:
        both, valid, unseen = _scored(spark, plan, raw, params.dfs_tmpdir)
        scored = both.drop(shadow.SHADOW)
        lineage = scoring.Lineage(resolved.name, resolved.version, batch_id, _now(), run_id)
        with record.step("score", about=f"input {plan.source}") as log:
            profile = registry.training_profile(resolved, log)
            shadowed = plan.challenger is not None and plan.shadow_output is not None and valid is not None
            report = score.monitor_batch(scored, both, shadowed=shadowed, unseen=unseen, profile=profile, params=params)
            counts = {"rows_in": report.rows_in, "rows_scored": report.rows_scored}
            record.record({**counts, "rows_rejected": report.rows_rejected}, rows=report.rows_in)
            score.check_counts(scored, report, limit=params.max_reject_fraction, source=plan.source)
        with record.step("write", output=str(plan.output)):
            written = score.write_batch(
                spark, scored, report, lineage, output=plan.output, rejects=plan.rejects, source=plan.source, **once
            )
            record.rows(written + report.rows_rejected)
        score.record_batch(record, report, written=written, threshold=params.drift_threshold)
        if plan.challenger is not None and plan.shadow_output is not None and valid is not None:
            shadow_lineage = dataclasses.replace(lineage, model_version=plan.challenger.version)
            with record.step("shadow", output=str(plan.shadow_output)):
                rows = shadow.shadow_rows(valid, shadow_lineage)
                compared = score.write_shadow(rows, report, plan.shadow_output, batch_id, **once)
                record.record({k: v for k, v in compared.items() if k.startswith("shadow_")})


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _summary(plan: Plan) -> dict[str, Any]:
    """The run's totals, read from its micro-batches' MLflow runs (they may have run in another
    process: the Spark Connect server's workers)."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[plan.experiment_id],
        filter_string=f"tags.incremental_run = '{plan.run_tag}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    batches = [
        {
            "batch_id": run.data.tags["batch_id"],
            **{k: int(run.data.metrics.get(k, 0)) for k in ("rows_in", "rows_scored", "rows_rejected", "rows_written")},
            "run_id": run.info.run_id,
            "drifted_features": [f for f in run.data.tags.get("drifted_features", "none").split(",") if f != "none"],
        }
        for run in runs
    ]
    totals = {k: sum(b[k] for b in batches) for k in ("rows_in", "rows_scored", "rows_rejected", "rows_written")}
    nothing = f"nothing new in {plan.source} since the last incremental run into {plan.output}"
    return {
        **totals,
        "model_version": plan.resolved.version,
        "batch_id": ",".join(b["batch_id"] for b in batches),
        "output": str(plan.output),
        "rejects_table": str(plan.rejects),
        "batches": batches,
        "checkpoint": plan.checkpoint,
        "incremental": nothing if not batches else f"{len(batches)} new batch(es) of {plan.source} scored",
    }
