"""The moves a person makes on ``champion``: ``promote`` and ``rollback [--rescore]``, through the
alias ledger (:mod:`diabetes_spark.promotion`); rescoring and replaying batches are
:mod:`diabetes_spark.jobs.rescore`. Commands a person runs, not scheduled jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diabetes_spark.params import DEFAULT_EXPERIMENT
from diabetes_spark.runtime import local_home

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession

    from diabetes_spark.ledger import Ledger, Move
    from diabetes_spark.registry import MlflowLocation


def run_promote(
    spark: SparkSession,
    *,
    model_name: str,
    version: str,
    reason: str,
    force: bool = False,
    alias_ledger: str = "",
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
) -> dict[str, Any]:
    """Move ``champion`` of ``model_name`` to ``version``, recorded in the ledger (see
    :func:`promotion.promote`: a version that failed validation needs ``force``).

    Returns:
        ``{"model_name", "alias", "from_version", "to_version", "moved_by", "reason", "alias_ledger"}``.
    """
    from diabetes_spark import ledger, promotion, registry
    from diabetes_spark.registry import MlflowLocation

    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with location.active():
        registry.check_model_name(model_name)
        moves = ledger.start(spark, alias_ledger, home or local_home(), model_name)
        return _moved(promotion.promote(moves, model_name, version, reason=reason, force=force), moves)


def run_rollback(
    spark: SparkSession,
    *,
    model_name: str,
    reason: str,
    to: str = "",
    rescore_output: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    alias_ledger: str = "",
    dfs_tmpdir: str = "",
    home: Path | None = None,
    mlflow_location: MlflowLocation | None = None,
) -> dict[str, Any]:
    """Move ``champion`` back (to ``to``, else to the version before the current one by the ledger);
    with ``rescore_output``, then rescore every batch there that the version left wrote.

    Returns:
        As :func:`run_promote`, with ``rescore`` (:func:`rescore.run_rescore`'s summary) when asked.

    Raises:
        InputError: Some batches could not be rescored (the message lists them); the others were.
    """
    from diabetes_spark import ledger, promotion, registry
    from diabetes_spark.jobs import rescore
    from diabetes_spark.registry import MlflowLocation

    location = mlflow_location or MlflowLocation.from_environment(home or local_home())
    with location.active():
        registry.check_model_name(model_name)
        moves = ledger.start(spark, alias_ledger, home or local_home(), model_name)
        if rescore_output:
            rescore.check_output(spark, rescore_output)  # before anything moves
        moved = promotion.rollback(moves, model_name, reason=reason, to=to)
        summary = _moved(moved, moves)
        if rescore_output and moved.from_version:
            summary["rescore"] = rescore.run_rescore(
                spark,
                output=rescore_output,
                model_version=moved.from_version,
                model_name=model_name,
                experiment=experiment,
                alias_ledger=alias_ledger,
                dfs_tmpdir=dfs_tmpdir,
                home=home,
                mlflow_location=location,
            )
        return summary


def _moved(move: Move, moves: Ledger) -> dict[str, Any]:
    return {
        "model_name": move.model_name,
        "alias": move.alias,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "moved_by": move.moved_by,
        "reason": move.reason,
        "moved": move.describe(),
        "alias_ledger": str(moves.ref),
    }
