"""Repair and reproduction of scored batches, from what each batch recorded.

Every predictions row carries its batch, model version and scoring run; the run records the exact
input it read (:mod:`diabetes_spark.provenance`). :func:`run_rescore` scores again, with the current
champion, every batch a given version wrote, from the batch's own input version, and replaces each
batch in one commit with the same row count. :func:`run_replay` scores one batch again with its own
model version and compares with the stored rows, writing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from diabetes_spark import ledger, provenance, registry, schemas, scoring, spark_models, storage
from diabetes_spark.errors import InputError, ParamError, ReplayDifferenceError, one_line, spark_failures
from diabetes_spark.jobs import tables
from diabetes_spark.jobs.score import load_scorer
from diabetes_spark.params import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.runtime import local_home

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.storage import TableRef


@dataclass(frozen=True)
class Batch:
    """One batch of a predictions table, as its rows record it."""

    batch_id: str
    model_name: str
    model_version: str
    run_id: str
    rows: int


def check_output(spark: SparkSession, output: str) -> TableRef:
    """The predictions table ``output``, which must exist.

    Raises:
        InputError: It does not exist.
    """
    ref = storage.resolve(output)
    if not storage.table_exists(spark, ref):
        raise InputError(f"predictions table {ref} does not exist: give the --output a scoring run wrote")
    return ref


def _batches(table: DataFrame, where: str) -> list[Batch]:
    """The batches of ``table`` matching ``where``; a batch whose rows name several runs is one per run."""
    found = (
        table.where(where)
        .groupBy("batch_id", "model_name", "model_version", "mlflow_run_id")
        .count()
        .orderBy("batch_id")
        .collect()
    )
    return [
        Batch(r["batch_id"], r["model_name"], r["model_version"], r["mlflow_run_id"], int(r["count"])) for r in found
    ]


def _input_of(spark: SparkSession, batch: Batch) -> tuple[DataFrame, provenance.InputVersion]:
    """The batch's input read again at its recorded version (a file only if unchanged).

    Raises:
        InputError: The run records no input, or the file changed since the batch.
    """
    _, recorded = provenance.run_input(batch.run_id)
    if recorded is None:
        raise InputError(f"its scoring run {batch.run_id} records no input version")
    raw = storage.read_table(spark, recorded.ref, version=recorded.version)
    if recorded.version is None:
        now = storage.input_fingerprint(raw)
        if now != recorded.fingerprint:
            raise InputError(
                f"input {recorded.ref} changed since the batch (file fingerprint {recorded.fingerprint}, now {now})"
            )
    return raw, recorded


def _scored(spark: SparkSession, raw: DataFrame, resolved: registry.ResolvedModel, dfs_tmpdir: str) -> DataFrame:
    """The valid rows of ``raw`` scored by ``resolved``, as the scoring job scores them."""
    model, compiled, _ = load_scorer(spark, resolved, dfs_tmpdir)
    annotated = schemas.annotate(raw, schemas.load_schema("scoring_input"))
    return schemas.valid_rows(scoring.reject_non_finite(scoring.predict(annotated, model, compiled=compiled)))


def _unreadable(recorded: str, error: Exception) -> Exception:
    """Why a batch's input could not be scored again: the JVM's memory failure as it is (it ends the
    command: the next batch would meet it too), else the input gone at its recorded version."""
    from diabetes_spark.session import environment_error

    return environment_error(error) or InputError(
        f"input {recorded} can no longer be read at its recorded version (vacuumed past its retention, or its "
        f"files removed): {one_line(error, 300)}"
    )


def run_rescore(
    spark: SparkSession,
    *,
    output: str,
    model_version: str,
    model_name: str = DEFAULT_MODEL_NAME,
    experiment: str = DEFAULT_EXPERIMENT,
    alias_ledger: str = "",
    dfs_tmpdir: str = "",
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
) -> dict[str, Any]:
    """Score again, with the current champion, every batch of ``output`` that ``model_version`` wrote.

    Each batch is read at its recorded input version, scored, counted (the same rows as it holds,
    or it is left as it is) and replaced in one commit (Delta ``replaceWhere`` on its batch), with
    lineage naming the champion and a new MLflow run that records the input. A batch already
    rescored no longer carries ``model_version``: a rerun after an interruption finishes the rest.

    Returns:
        ``{"output", "model_version", "champion_version", "batches_rescored", "rows_rescored"}``.

    Raises:
        InputError: No batch of ``model_version`` in ``output``; or some batches could not be read at
            their input version (vacuumed, a changed file): the others were rescored, and the
            message lists each one left with its reason.
        ParamError: ``model_version`` is still the champion.
    """
    import mlflow

    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with location.active(), spark_models.removing_staged_copies():
        ref = check_output(spark, output)
        ledger.start(spark, alias_ledger, home or local_home(), model_name)
        table = storage.read_table(spark, ref)
        where = f"model_name = '{_quoted(model_name)}' AND model_version = '{_quoted(model_version)}'"
        batches = _batches(table, where)
        if not batches:
            versions = sorted({str(r[0]) for r in table.select("model_version").distinct().collect()})
            raise InputError(
                f"no batch of {ref} was scored by {model_name} v{model_version}; versions there: {versions or 'none'}"
            )
        champion = registry.resolve_version(model_name)
        if champion.version == model_version:
            raise ParamError(
                f"{model_name} v{model_version} is still the champion: roll back first (diabetes-spark rollback)"
            )
        experiment_id = location.ensure_experiment(experiment)
        done: list[str] = []
        left: dict[str, str] = {}
        rows = 0
        for batch in batches:
            try:
                raw, recorded = _input_of(spark, batch)
                valid = _scored(spark, raw, champion, dfs_tmpdir)
                try:
                    count = valid.count()
                except spark_failures() as e:
                    raise _unreadable(str(recorded), e) from e
                if count != batch.rows:
                    raise InputError(f"scoring it again gives {count} rows, the batch holds {batch.rows}")
            except InputError as e:
                left[batch.batch_id] = one_line(e, 500)
                continue
            tags = {"job": "rescore", "batch_id": batch.batch_id, "rescored_from_version": model_version}
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"rescore-{batch.batch_id}") as run:
                mlflow.set_tags({**tags, "rescored_run_id": batch.run_id})
                mlflow.log_params({"model_name": model_name, "resolved_model_version": champion.version})
                provenance.log_input(recorded, context=provenance.SCORING)
                now = datetime.now(timezone.utc).replace(tzinfo=None)
                lineage = scoring.Lineage(model_name, champion.version, batch.batch_id, now, run.info.run_id)
                tables.write(
                    scoring.with_lineage(valid, lineage),
                    ref,
                    expected=batch.rows,
                    mode="overwrite",
                    replace_where=f"batch_id = '{_quoted(batch.batch_id)}'",
                )
                mlflow.log_metrics({"rows_rescored": batch.rows})
            done.append(batch.batch_id)
            rows += batch.rows
    if left:
        listed = "; ".join(f"{b}: {why}" for b, why in left.items())
        raise InputError(
            f"rescored {len(done)} batch(es) of {ref} ({', '.join(done) or 'none'}); left as they are, on "
            f"v{model_version}: {listed}"
        )
    return {
        "output": str(ref),
        "model_version": model_version,
        "champion_version": champion.version,
        "batches_rescored": done,
        "rows_rescored": rows,
    }


def run_replay(
    spark: SparkSession,
    *,
    output: str,
    batch_id: str,
    dfs_tmpdir: str = "",
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
) -> dict[str, Any]:
    """Score batch ``batch_id`` of ``output`` again, from its recorded input version with its recorded
    model version, and compare with its stored rows, column by column. Writes nothing.

    Returns:
        ``{"output", "batch_id", "model_version", "input", "rows_compared", "rows_differing",
        "rows_missing"}`` when every row is identical.

    Raises:
        ReplayDifferenceError: Some rows differ (exit 3); it carries the same summary.
        InputError: The batch does not exist, or cannot be replayed: its input vacuumed past
            retention, a file changed since, no recorded input.
    """
    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with location.active(), spark_models.removing_staged_copies():
        ref = check_output(spark, output)
        table = storage.read_table(spark, ref)
        found = _batches(table, f"batch_id = '{_quoted(batch_id)}'")
        if not found:
            some = [str(r[0]) for r in table.select("batch_id").distinct().orderBy("batch_id").limit(20).collect()]
            raise InputError(f"batch {batch_id!r} is not in {ref}; batches there (first 20): {some or 'none'}")
        if len(found) > 1:
            runs = ", ".join(f"v{b.model_version} run {b.run_id}" for b in found)
            raise InputError(f"batch {batch_id!r} of {ref} holds rows of several scoring runs ({runs}): cannot replay")
        (batch,) = found
        try:
            raw, recorded = _input_of(spark, batch)
        except InputError as e:
            raise InputError(f"cannot replay batch {batch_id!r}: {one_line(e, 500)}") from e
        resolved = registry.resolve_version(batch.model_name, version=batch.model_version)
        stored = table.where(f"batch_id = '{_quoted(batch_id)}'")
        scored_at = stored.select("scored_at").first()
        lineage = scoring.Lineage(batch.model_name, batch.model_version, batch_id, scored_at[0], batch.run_id)  # type: ignore[index]
        again = _aligned(scoring.with_lineage(_scored(spark, raw, resolved, dfs_tmpdir), lineage), stored)
        try:
            differing, missing = stored.exceptAll(again).count(), again.exceptAll(stored).count()
        except spark_failures() as e:
            why = _unreadable(str(recorded), e)
            if isinstance(why, InputError):
                why = InputError(f"cannot replay batch {batch_id!r}: {why}")
            raise why from e
    summary = {
        "output": str(ref),
        "batch_id": batch_id,
        "model_version": batch.model_version,
        "input": str(recorded),
        "rows_compared": batch.rows,
        "rows_differing": differing,
        "rows_missing": missing,
    }
    if differing or missing:
        raise ReplayDifferenceError(
            f"batch {batch_id!r} of {ref}: {differing} of {batch.rows} stored rows differ from the replay "
            f"({missing} replayed rows have no identical stored row)",
            summary,
        )
    return summary


def _aligned(again: DataFrame, stored: DataFrame) -> DataFrame:
    """``again`` with ``stored``'s columns in its order and types (a column another batch added is null)."""
    have = set(again.columns)
    return again.select(
        *[
            (F.col(f.name) if f.name in have else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in stored.schema.fields
        ]
    )


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
