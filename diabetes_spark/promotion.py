"""The champion/challenger gate (``champion`` moves to a new version only if it wins), and the moves
a person makes: :func:`promote` and :func:`rollback`. Every move goes through the alias ledger.

A new version is first validated (:mod:`validation`: thresholds, improvement over the champion,
both on all the training run's held-out rows), then judged against the current champion on the same
rows by the run's primary metric. MLflow aliases have no compare-and-set, so the gate is optimistic and
re-checks the alias after moving it (see :func:`promote_if_better`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from diabetes_spark import evaluation, ledger, registry, scoring, spark_models, validation
from diabetes_spark.errors import ParamError, RegistryError
from diabetes_spark.schemas import LABEL, PREDICTION

if TYPE_CHECKING:
    from diabetes_spark.ledger import Ledger, Move
    from diabetes_spark.params import TrainParams
    from diabetes_spark.training import TrainResult


#: Rounds of the gate's optimistic loop (see :func:`promote_if_better`).
GATE_ROUNDS = 5
#: Pause between moving ``champion`` and reading it back: far longer than the gap between another
#: run's last read of the alias and its move, so an overwritten promotion is always noticed.
ALIAS_SETTLE_SECONDS = 1.0


def champion_metrics(params: TrainParams, champion: str, result: TrainResult) -> dict[str, float]:
    """Version ``champion``'s rmse, mae, r2 and mse on all of ``result``'s held-out rows (one pass)."""
    resolved = registry.resolve_version(params.model_name, version=champion)
    spec = registry.model_metadata(resolved).get(scoring.LINEAR_SPEC)
    model = None if spec else spark_models.load_model(result.train.sparkSession, resolved, dfs_tmpdir=params.dfs_tmpdir)
    predictions = scoring.predict(result.test, model, compiled=scoring.spec_column(spec) if spec else None)
    return evaluation.regression_metrics(predictions, label=LABEL, prediction=PREDICTION)


def validate(params: TrainParams, result: TrainResult) -> validation.Verdict:
    """The new version's verdict in ``params.validation_mode``, against the current champion (if any)
    on the same held-out rows."""
    if params.validation_mode == "disabled":
        return validation.validate("disabled", {}, result.metrics)
    champion = registry.alias_version(params.model_name, registry.CHAMPION)
    baseline = champion_metrics(params, champion, result) if champion else None
    found = validation.rules(
        params.validation_thresholds,
        primary_metric=params.primary_metric,
        min_improvement=params.min_improvement,
        has_baseline=baseline is not None,
    )
    return validation.validate(params.validation_mode, found, result.metrics, baseline, champion or "")


def _judge(
    params: TrainParams, champion: str | None, result: TrainResult, known: dict[str, dict[str, float]]
) -> tuple[bool, str]:
    """Whether this run's model should replace ``champion``, and why."""
    import mlflow

    if champion is None:
        return True, "no champion yet"
    metric = params.primary_metric
    challenger = result.metrics[metric]
    if not known.get(champion):  # each version is evaluated once per run: validation may have done it
        known[champion] = champion_metrics(params, champion, result)
    score = known[champion][metric]
    mlflow.log_metric(f"champion_{metric}", score)
    better = evaluation.is_better(metric, challenger, score)
    verdict = "beats" if better else "does not beat"
    return better, f"challenger {metric} {challenger:.4f} {verdict} champion v{champion} {score:.4f}"


def promote_if_better(
    params: TrainParams,
    version: str,
    result: TrainResult,
    log: logging.Logger,
    *,
    known: dict[str, dict[str, float]] | None = None,
    moves: Ledger | None = None,
    run_id: str = "",
) -> tuple[bool, str]:
    """Move ``champion`` to ``version`` if there is none or it is beaten; record the decision.

    Two training runs at once can both read "no champion" (or the same old one) and both promote.
    So the gate re-reads the alias just before moving it (a move made while this run was comparing
    is judged in turn), then waits :data:`ALIAS_SETTLE_SECONDS` and reads it again. If another run
    moved it in between, this run compares itself with that version and promotes again only if it
    beats it. A run stops when the alias holds its own version or one it lost to, after at most
    :data:`GATE_ROUNDS` rounds. The active MLflow run's tags and the version's tags record the
    final decision.

    ``known`` maps versions to metrics already computed on these held-out rows (by validation).
    Each move is a row of the ledger ``moves`` (action ``gate``, training run ``run_id``). With
    ``promotion_mode`` ``manual`` nothing moves: a person promotes (:func:`promote`).

    Returns:
        ``(promoted, champion version)``.
    """
    name = params.model_name
    if params.promotion_mode == "manual":
        current = registry.alias_version(name, registry.CHAMPION)
        return _decided(params, version, result, log, current, "promotion_mode manual: a person promotes")
    known = {v: m for v, m in (known or {}).items() if v and m}
    current, reason = None, ""
    for _ in range(GATE_ROUNDS):
        current = registry.alias_version(name, registry.CHAMPION)
        if current == version:
            break
        better, reason = _judge(params, current, result, known)
        if not better:
            break
        if registry.alias_version(name, registry.CHAMPION) != current:
            continue  # moved while this run was comparing: judge the new champion
        if moves is None:
            registry.set_alias(name, registry.CHAMPION, version)
        else:
            compared = {f"champion_{m}": v for m, v in known.get(current or "", {}).items()}
            metrics = {**result.metrics, **compared}
            moves.move(
                name, registry.CHAMPION, version, action=ledger.GATE, reason=reason, metrics=metrics, run_id=run_id
            )
        time.sleep(ALIAS_SETTLE_SECONDS)
    else:
        current = registry.alias_version(name, registry.CHAMPION)
        reason = f"{reason}; stopped after {GATE_ROUNDS} rounds of concurrent promotions"
        log.warning("model %s v%s: %s", name, version, reason)
    return _decided(params, version, result, log, current, reason)


def _decided(
    params: TrainParams, version: str, result: TrainResult, log: logging.Logger, current: str | None, reason: str
) -> tuple[bool, str]:
    """The gate's decision on the run and the version (tags, metric, log line)."""
    import mlflow

    name, metric = params.model_name, params.primary_metric
    promoted, champion = current == version, current or ""
    mlflow.log_metric(f"challenger_{metric}", result.metrics[metric])
    mlflow.set_tags({"champion_decision": "promoted" if promoted else "kept", "champion_reason": reason})
    registry.version_tags(name, version, {metric: result.metrics[metric], "promoted": promoted})
    log.info("model %s v%s: %s; champion: v%s", name, version, reason, champion)
    return promoted, champion


def promote(moves: Ledger, model_name: str, version: str, *, reason: str, force: bool = False) -> Move:
    """Move ``champion`` to ``version`` through the ledger (action ``promote``).

    Raises:
        ParamError: No reason, or ``version`` is already the champion.
        RegistryError: ``version`` does not exist, or its tags say it failed validation and ``force``
            is not given; nothing moved.
    """
    _check_reason(reason, "promote")
    resolved = registry.resolve_version(model_name, version=version)
    tags = registry.tags_of(model_name, resolved.version)
    forced = ""
    if tags.get("validation_verdict") == validation.FAILED:
        failures = tags.get("validation_failures", "")
        if not force:
            raise RegistryError(
                f"model {model_name} v{resolved.version} failed validation (tag validation_verdict=failed{': ' if failures else ''}"
                f"{failures}); champion unchanged. Promote a version that passed, or pass --force to promote it anyway"
            )
        forced = " [forced past failed validation]"
    current = registry.alias_version(model_name, registry.CHAMPION)
    if current == resolved.version:
        raise ParamError(f"model {model_name} v{current} is already champion: nothing to promote")
    metrics = _float_tags(tags, "validation_")
    return moves.move(
        model_name,
        registry.CHAMPION,
        resolved.version,
        action=ledger.PROMOTE,
        reason=reason + forced,
        metrics=metrics,
        run_id=resolved.run_id,
    )


def rollback(moves: Ledger, model_name: str, *, reason: str, to: str = "") -> Move:
    """Move ``champion`` back to ``to``, or to the version it held before the current one according
    to the ledger (:func:`ledger.champion_before`); action ``rollback``.

    Raises:
        ParamError: No reason, or the target is already the champion.
        RegistryError: No champion, no earlier version in the ledger (give ``to``), or ``to`` does
            not exist; nothing moved.
    """
    _check_reason(reason, "rollback")
    current = registry.alias_version(model_name, registry.CHAMPION)
    if current is None:
        raise RegistryError(f"model {model_name} has no champion: nothing to roll back (promote a version instead)")
    target = to or ledger.champion_before(moves.history(model_name, registry.CHAMPION), current)
    if not target:
        raise RegistryError(
            f"the alias ledger {moves.ref} holds no champion of {model_name} before v{current}: give the version to "
            "go back to with --to V"
        )
    resolved = registry.resolve_version(model_name, version=target)
    if resolved.version == current:
        raise ParamError(f"model {model_name} v{current} is already champion: nothing to roll back")
    metrics = _float_tags(registry.tags_of(model_name, resolved.version), "validation_")
    return moves.move(
        model_name,
        registry.CHAMPION,
        resolved.version,
        action=ledger.ROLLBACK,
        reason=reason,
        metrics=metrics,
        run_id=resolved.run_id,
    )


def _check_reason(reason: str, command: str) -> None:
    if not reason.strip():
        raise ParamError(f"{command} needs a reason (--reason TEXT): the alias ledger records why champion moved")


def _float_tags(tags: dict[str, str], prefix: str) -> dict[str, float]:
    """The tags ``<prefix><metric>`` holding a number, as ``metric -> value``."""
    out = {}
    for key, value in tags.items():
        if key.startswith(prefix):
            try:
                out[key[len(prefix) :]] = float(value)
            except ValueError:
                continue
    return out
