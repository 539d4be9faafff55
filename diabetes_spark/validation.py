"""Thresholds with MLflow's semantics (``MetricThreshold``), the validation modes, and the verdict
recorded on the training run and the model version.

The metrics are computed in Spark over every held-out row (:func:`evaluation.regression_metrics`),
never through ``mlflow.evaluate``, which keeps only the first 10,000 rows of a Spark DataFrame. They
are judged by ``mlflow.validate_evaluation_results`` where the installed MLflow has it in its current
form (:func:`mlflow_judges`), and by :func:`_validate_own`, the same rules and the same messages,
where it does not (DBR 15.4's 2.13, and the runtimes whose MLflow predates the negative-baseline fix).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

from diabetes_spark.evaluation import METRICS, greater_is_better
from diabetes_spark.params import VALIDATION_MODES
from diabetes_spark.thresholds import parse_thresholds

#: The verdicts recorded in tag ``validation_verdict``.
PASSED, FAILED, DISABLED = "passed", "failed", "disabled"
#: MLflow's fallback step when a relative change is asked of a zero baseline.
_ZERO_BASELINE_STEP = 1e-10


@dataclass(frozen=True)
class Rule:
    """One metric's rule, the fields of MLflow's ``MetricThreshold``."""

    greater_is_better: bool
    threshold: float | None = None
    min_relative_change: float | None = None

    def to_mlflow(self) -> Any:
        """This rule as ``mlflow.models.MetricThreshold``."""
        from mlflow.models import MetricThreshold

        return MetricThreshold(
            threshold=self.threshold,
            min_relative_change=self.min_relative_change,
            greater_is_better=self.greater_is_better,
        )


def rules(thresholds: str, *, primary_metric: str, min_improvement: float, has_baseline: bool) -> dict[str, Rule]:
    """The rules of ``validation_thresholds`` and ``min_improvement`` (on ``primary_metric``, judged
    only when there is a champion to improve on and it is above 0)."""
    out = {m: Rule(greater_is_better(m), threshold=bound) for m, bound in parse_thresholds(thresholds).items()}
    if min_improvement > 0 and has_baseline:
        current = out.get(primary_metric, Rule(greater_is_better(primary_metric)))
        out[primary_metric] = Rule(current.greater_is_better, current.threshold, float(min_improvement))
    return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one version: ``passed``, ``failed`` or ``disabled``."""

    mode: str
    verdict: str
    candidate: dict[str, float]
    champion: dict[str, float] = field(default_factory=dict)
    champion_version: str = ""
    failures: tuple[str, ...] = ()
    judged_by: str = ""

    @property
    def blocks(self) -> bool:
        """True when this verdict keeps the version from becoming champion."""
        return self.mode == "enabled" and self.verdict == FAILED

    def description(self) -> str:
        """The verdict as the model version's description (the registry UI shows it)."""
        values = ", ".join(f"{m}={self.candidate[m]:.6g}" for m in METRICS if m in self.candidate)
        text = f"validation ({self.mode}): {self.verdict}; held-out {values}"
        if self.champion_version:
            champion = ", ".join(f"{m}={self.champion[m]:.6g}" for m in METRICS if m in self.champion)
            text += f"; champion v{self.champion_version}: {champion}"
        return text + "".join(f"\n{line}" for line in self.failures)

    def tags(self) -> dict[str, str]:
        """The verdict and each metric as tags (of the run and of the version)."""
        out = {"validation_mode": self.mode, "validation_verdict": self.verdict}
        out.update({f"validation_{m}": repr(v) for m, v in self.candidate.items()})
        if self.champion_version:
            out["validation_champion_version"] = self.champion_version
            out.update({f"validation_champion_{m}": repr(v) for m, v in self.champion.items()})
        if self.failures:
            out["validation_failures"] = " ".join(self.failures)[:4000]
        if self.judged_by:
            out["validation_judged_by"] = self.judged_by
        return out


def validate(
    mode: str,
    found: dict[str, Rule],
    candidate: dict[str, float],
    champion: dict[str, float] | None = None,
    champion_version: str = "",
) -> Verdict:
    """Judge ``candidate`` (and ``champion``, when there is one) by ``found`` in ``mode``."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"validation mode must be one of {VALIDATION_MODES}; got {mode!r}")
    metrics = {m: float(v) for m, v in candidate.items() if m in METRICS}
    baseline = {m: float(v) for m, v in (champion or {}).items() if m in METRICS}
    if mode == "disabled":
        return Verdict(mode, DISABLED, metrics, baseline, champion_version)
    failures, judged_by = judge(found, metrics, baseline)
    return Verdict(mode, FAILED if failures else PASSED, metrics, baseline, champion_version, failures, judged_by)


def judge(
    found: dict[str, Rule], candidate: dict[str, float], baseline: dict[str, float]
) -> tuple[tuple[str, ...], str]:
    """``(failure lines, what judged)``: MLflow's ``validate_evaluation_results`` where it exists
    and keeps the sign of a change over a negative baseline (:func:`mlflow_judges`), else ours."""
    import mlflow

    if not mlflow_judges():
        return tuple(_validate_own(found, candidate, baseline)), "diabetes_spark"
    return tuple(_validate_mlflow(found, candidate, baseline)), f"mlflow {mlflow.__version__}"


@functools.cache
def mlflow_judges() -> bool:
    """Whether the installed MLflow judges thresholds as MLflow does today: it has
    ``validate_evaluation_results``, and a relative change over a negative baseline (an r2 below 0)
    is measured against the baseline's magnitude. Before that fix (the 2.21 and 3.0-3.8 of DBR
    16.4-18 and serverless 5) a candidate r2 of 0 against a champion's -0.5 failed a relative
    improvement, blocking the better model; such a runtime gets our rules, the same on every runtime.
    Asked of MLflow's public function with that one case, not of its version number."""
    import mlflow

    if not hasattr(mlflow, "validate_evaluation_results"):
        return False
    rule = {"r2": Rule(greater_is_better=True, min_relative_change=0.1)}
    return not _validate_mlflow(rule, {"r2": 0.0}, {"r2": -0.5})


def _validate_mlflow(found: dict[str, Rule], candidate: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """The failure lines of ``mlflow.validate_evaluation_results`` on the metrics as ``EvaluationResult``s."""
    import mlflow
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    if not found:
        return []
    thresholds = {m: rule.to_mlflow() for m, rule in found.items()}
    try:
        mlflow.validate_evaluation_results(
            thresholds,
            EvaluationResult(metrics=candidate, artifacts={}),
            EvaluationResult(metrics=baseline, artifacts={}) if baseline else None,
        )
    except ModelValidationFailedException as e:
        return [line for line in e.message.split(os.linesep) if line]
    return []


def _validate_own(found: dict[str, Rule], candidate: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """MLflow's rules (``mlflow.models.evaluation.validation._validate``), for an MLflow without them.

    A metric passes ``threshold`` when it is >= it (greater is better) or <= it; it passes
    ``min_relative_change`` when its change over the baseline, in units of the baseline's magnitude
    and signed so that better is positive, is at least that much; a zero baseline needs only to be
    beaten by 1e-10.
    """
    from decimal import Decimal

    failures = []
    for metric, rule in found.items():
        if metric not in candidate:
            failures.append(
                f"Metric validation failed: metric {metric} was missing from the evaluation result of the "
                "candidate model."
            )
            continue
        value, base = candidate[metric], baseline.get(metric)
        parts = []
        if rule.threshold is not None and not _at_least(value, rule.threshold, rule.greater_is_better):
            parts.append(
                f"Metric {metric} value threshold check failed: candidate model {metric} = {value}, "
                f"{metric} threshold = {rule.threshold}."
            )
        if rule.min_relative_change and base is None:
            parts.append(
                f"Model comparison failed: metric {metric} was missing from the evaluation result of the "
                "baseline model."
            )
        elif rule.min_relative_change is not None and base is not None:
            if base == 0:
                step = _ZERO_BASELINE_STEP if rule.greater_is_better else -_ZERO_BASELINE_STEP
                failed = not _at_least(Decimal(value), Decimal(base + step), rule.greater_is_better)
            else:
                change = (value - base if rule.greater_is_better else base - value) / abs(base)
                failed = change < rule.min_relative_change
            if failed:
                parts.append(
                    f"Metric {metric} minimum relative change check failed: candidate model {metric} = {value}, "
                    f"baseline model {metric} = {base}, {metric} minimum relative change threshold = "
                    f"{rule.min_relative_change}."
                )
        if parts:
            failures.append(" ".join(parts))
    return failures


def _at_least(value: Any, bound: Any, greater_is_better: bool) -> bool:
    return bool(value >= bound if greater_is_better else value <= bound)


def record(verdict: Verdict, *, model_name: str, version: str) -> None:
    """The verdict and each metric on the active MLflow run (tags, metrics) and on the model version
    (tags, description)."""
    import mlflow

    from diabetes_spark import registry

    tags = verdict.tags()
    mlflow.set_tags(tags)
    mlflow.log_metrics({f"validation_{m}": v for m, v in verdict.candidate.items()})
    if verdict.champion:
        mlflow.log_metrics({f"validation_champion_{m}": v for m, v in verdict.champion.items()})
    registry.version_tags(model_name, version, tags)
    registry.describe_version(model_name, version, verdict.description())
