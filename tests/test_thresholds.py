"""Thresholds as MLflow judges them: reading ``validation_thresholds``, our rules against MLflow's
``validate_evaluation_results`` case by case, and which of the two judges on the installed MLflow.
No Spark: the runtime legs run it against each runtime's own MLflow."""

from __future__ import annotations

import itertools

import mlflow
import pytest

from diabetes_spark import evaluation, validation
from diabetes_spark.errors import ParamError
from diabetes_spark.params import TrainParams
from diabetes_spark.thresholds import THRESHOLD_FORM, parse_thresholds


def test_thresholds_are_read_with_each_metrics_direction() -> None:
    assert parse_thresholds(" rmse<=60, r2>=0.35 ,mse<=3.6e3") == {"rmse": 60.0, "r2": 0.35, "mse": 3600.0}
    assert parse_thresholds("") == {}


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("accuracy>=0.9", "unknown metric 'accuracy'"),
        ("rmse>=60", "rmse takes <=, not '>='"),
        ("rmse<60", "rmse takes <=, not '<'"),
        ("r2=>0.3", "r2 takes >=, not '=>'"),
        ("rmse<=sixty", "'sixty' is not a number"),
        ("rmse<=nan", "'nan' is not a number"),
        ("rmse 60", "cannot read 'rmse 60'"),
        ("rmse<=60,rmse<=50", "rmse is given twice"),
    ],
)
def test_a_malformed_threshold_names_the_problem_and_the_accepted_form(text: str, found: str) -> None:
    with pytest.raises(ParamError) as info:
        TrainParams(training_data="t", validation_thresholds=text)
    assert found in str(info.value) and THRESHOLD_FORM in str(info.value)


def test_min_improvement_is_a_fraction() -> None:
    with pytest.raises(ParamError, match=r"min_improvement must be in \[0, 1\]; got 1.5"):
        TrainParams(training_data="t", min_improvement=1.5)


#: Candidate, baseline and rule cases, edges included: equal values, negative and zero baselines.
_VALUES = (-0.5, 0.0, 0.3, 0.35, 0.5, 60.0, 61.0)


def _cases() -> list[tuple[dict[str, validation.Rule], dict[str, float], dict[str, float]]]:
    out = []
    for candidate, baseline, bound, change in itertools.product(
        _VALUES, (*_VALUES, None), (None, 0.35, 60.0), (None, 0.0, 0.1, 1.0)
    ):
        if (bound is None and change is None) or (change == 0.0 and baseline is None):
            continue  # MLflow refuses the first and raises TypeError on the second; rules() builds neither
        for metric in ("r2", "rmse"):
            rule = validation.Rule(evaluation.greater_is_better(metric), bound, change)
            out.append(({metric: rule}, {metric: candidate}, {} if baseline is None else {metric: baseline}))
    return out


@pytest.mark.skipif(not hasattr(mlflow, "validate_evaluation_results"), reason="MLflow 2.13 has no rules to compare")
def test_our_rules_give_mlflows_verdicts_and_messages() -> None:
    """Where MLflow does not judge (:func:`validation.mlflow_judges`) our code does: it must say what
    today's MLflow says, case by case. An MLflow from before the negative-baseline fix agrees on every
    case but those (an r2 below 0 as the baseline of a relative change)."""
    cases = _cases()
    if not validation.mlflow_judges():
        cases = [
            c for c in cases if not any(v < 0 and c[0][m].min_relative_change is not None for m, v in c[2].items())
        ]
    assert len(cases) > 300
    mismatches = [
        (rules, candidate, baseline)
        for rules, candidate, baseline in cases
        if validation._validate_own(rules, candidate, baseline)
        != validation._validate_mlflow(rules, candidate, baseline)
    ]
    assert mismatches == []
    failing = sum(bool(validation._validate_own(*case)) for case in cases)
    assert 0 < failing < len(cases)  # both verdicts occur


def test_the_verdict_names_each_failing_metric_its_value_and_threshold() -> None:
    rules = validation.rules("rmse<=60,r2>=0.35", primary_metric="rmse", min_improvement=0.1, has_baseline=True)
    verdict = validation.validate(
        "enabled", rules, {"rmse": 61.5, "r2": 0.4, "mae": 50.0, "mse": 3782.25}, {"rmse": 62.0, "r2": 0.3}
    )
    assert verdict.verdict == "failed" and verdict.blocks
    (line,) = verdict.failures
    assert "candidate model rmse = 61.5, rmse threshold = 60.0" in line
    assert "baseline model rmse = 62.0, rmse minimum relative change threshold = 0.1" in line
    assert not validation.validate("dry_run", rules, {"rmse": 61.5, "r2": 0.4}).blocks  # dry_run never blocks
    first = validation.rules("", primary_metric="rmse", min_improvement=0.1, has_baseline=False)
    assert first == {}  # no champion yet: nothing to improve on


def test_the_verdict_is_mlflows_where_mlflow_has_the_api_else_ours() -> None:
    rules = validation.rules("rmse<=60", primary_metric="rmse", min_improvement=0.0, has_baseline=True)
    failures, judged_by = validation.judge(rules, {"rmse": 61.5}, {"rmse": 62.0})
    assert judged_by == (f"mlflow {mlflow.__version__}" if validation.mlflow_judges() else "diabetes_spark")
    assert failures == (
        "Metric rmse value threshold check failed: candidate model rmse = 61.5, rmse threshold = 60.0.",
    )


def test_a_better_candidate_than_a_negative_champion_passes_a_relative_improvement() -> None:
    """r2 from -0.5 to 0 is an improvement of its magnitude: it passes a 10% minimum on every runtime
    (MLflow 2.21-3.8's own rule divided by the signed baseline and failed it)."""
    rules = validation.rules("", primary_metric="r2", min_improvement=0.1, has_baseline=True)
    assert validation.judge(rules, {"r2": 0.0}, {"r2": -0.5})[0] == ()
    failures, _ = validation.judge(rules, {"r2": -0.48}, {"r2": -0.5})  # 4%: short of 10%
    assert len(failures) == 1 and "r2 minimum relative change check failed" in failures[0]
