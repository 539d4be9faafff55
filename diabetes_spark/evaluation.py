"""Regression metrics and the reports logged as run artifacts (the drift profile: :mod:`drift`).

Everything here takes DataFrames and returns values or writes files into a folder it is given;
logging them to MLflow is the caller's business.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pyspark.sql import functions as F

from diabetes_spark.schemas import CATEGORICAL, REASON, feature_names, numeric_feature_names

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.ml.regression import GBTRegressionModel, LinearRegressionModel, RandomForestRegressionModel
    from pyspark.sql import DataFrame, Row


METRICS = ("rmse", "mae", "r2", "mse")
_LARGER_IS_BETTER = {"r2"}
_PLOT_ROWS = 10_000


def regression_metrics(predictions: DataFrame, *, label: str, prediction: str) -> dict[str, float]:
    """RMSE, MAE, R2 and MSE in one aggregate pass.

    The same definitions as Spark's ``RegressionEvaluator`` (R2 = 1 - SSE / SST, not through the
    origin), which would run one Spark job per metric.
    """
    error = F.col(label) - F.col(prediction)
    # An aggregate without grouping always returns one row; pyspark types first() as Row | None.
    row = cast(
        "Row",
        predictions.agg(
            F.avg(error * error).alias("mse"), F.avg(F.abs(error)).alias("mae"), F.var_pop(label).alias("var")
        ).first(),
    )
    mse, mae, variance = float(row["mse"]), float(row["mae"]), float(row["var"])
    r2 = 1.0 - mse / variance if variance > 0 else float("nan")
    return {"rmse": math.sqrt(mse), "mae": mae, "r2": r2, "mse": mse}


def greater_is_better(metric: str) -> bool:
    """MLflow's ``greater_is_better`` of ``metric``: true for r2, false for the errors."""
    return metric in _LARGER_IS_BETTER


def is_better(metric: str, challenger: float, champion: float) -> bool:
    """True when ``challenger`` strictly beats ``champion`` on ``metric``."""
    return challenger > champion if metric in _LARGER_IS_BETTER else challenger < champion


#: Quantiles computed per numeric feature: quartiles for the statistics, deciles for the profile.
QUARTILES = (0.25, 0.5, 0.75)


def summary(df: DataFrame, probabilities: list[float]) -> dict[str, Any]:
    """Count, mean, std, min, max and the quantiles ``probabilities`` of every numeric feature, and
    the categories of every categorical one, in one aggregate pass (one row, as a dict)."""
    aggs = [F.count(F.lit(1)).alias("__n")]
    for c in numeric_feature_names():
        aggs += [
            F.count(c).alias(f"{c}__count"),
            F.mean(c).alias(f"{c}__mean"),
            F.stddev(c).alias(f"{c}__std"),
            F.min(c).alias(f"{c}__min"),
            F.max(c).alias(f"{c}__max"),
            F.percentile_approx(c, probabilities, _QUANTILE_ACCURACY).alias(f"{c}__quantiles"),
        ]
    aggs += [F.collect_set(c).alias(f"{c}__categories") for c in CATEGORICAL]
    return cast("Row", df.agg(*aggs).first()).asDict()  # an aggregate without grouping: always one row


#: ``percentile_approx`` accuracy: relative error 1/accuracy = 0.001 of the rows.
_QUANTILE_ACCURACY = 1000


def statistics(row: dict[str, Any], probabilities: list[float]) -> list[dict[str, Any]]:
    """The per-feature statistics rows of a :func:`summary` row computed with ``probabilities``."""
    at = {p: probabilities.index(p) for p in QUARTILES}
    total = row["__n"] or 1
    stats = []
    for c in numeric_feature_names():
        q = row[f"{c}__quantiles"]
        stats.append(
            {
                "feature": c,
                "count": row[f"{c}__count"],
                "missing_pct": round(100.0 * (row["__n"] - row[f"{c}__count"]) / total, 3),
                "mean": row[f"{c}__mean"],
                "std": row[f"{c}__std"],
                "min": row[f"{c}__min"],
                "p25": q[at[0.25]] if q else None,
                "median": q[at[0.5]] if q else None,
                "p75": q[at[0.75]] if q else None,
                "max": row[f"{c}__max"],
            }
        )
    return stats


def data_quality_report(annotated: DataFrame, rows_in: int, rows_rejected: int) -> dict[str, Any]:
    """Rows in, rejected by reason (values masked) and % missing per column among valid rows."""
    by_reason = (
        annotated.filter(F.col(REASON).isNotNull())
        .select(F.explode(F.split(F.regexp_replace(REASON, "'[^']*'", "'...'"), "; ")).alias("reason"))
        .groupBy("reason")
        .count()
        .collect()
    )
    valid = annotated.filter(F.col(REASON).isNull())
    # An aggregate without grouping always returns one row; pyspark types first() as Row | None.
    missing = cast("Row", valid.agg(*[F.count(F.when(F.col(c).isNull(), 1)).alias(c) for c in feature_names()]).first())
    rows_valid = rows_in - rows_rejected
    return {
        "rows_in": rows_in,
        "rows_valid": rows_valid,
        "rows_rejected": rows_rejected,
        "rejected_by_reason": {r["reason"]: int(r["count"]) for r in sorted(by_reason, key=lambda r: -r["count"])},
        "missing_pct": {c: round(100.0 * missing[c] / max(rows_valid, 1), 3) for c in feature_names()},
    }


def _vector_names(model: PipelineModel) -> list[str]:
    """Names of the features vector's slots: imputed numeric columns, one slot per SEX label, unknown."""
    from pyspark.ml.feature import StringIndexerModel

    labels: list[str] = []
    for stage in model.stages:
        if isinstance(stage, StringIndexerModel):
            labels = list(stage.labels)
    return numeric_feature_names() + [f"SEX={label}" for label in labels] + ["SEX=unknown"]


def model_weights(model: PipelineModel) -> list[tuple[str, float]]:
    """Coefficients (linear, on the standardised scale, plus the intercept) or feature importances."""
    estimator = model.stages[-1]
    names = _vector_names(model)
    # The last stage is the fitted estimator of diabetes_spark.training: linear, GBT or random forest.
    if hasattr(estimator, "coefficients"):
        linear = cast("LinearRegressionModel", estimator)
        weights = list(zip(names, linear.coefficients.toArray().tolist()))
        return [*weights, ("intercept", float(linear.intercept))]
    trees = cast("GBTRegressionModel | RandomForestRegressionModel", estimator)
    return list(zip(names, trees.featureImportances.toArray().tolist()))


def pyplot() -> Any:
    """matplotlib's ``pyplot``, drawing to files only (the Agg backend); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plots(predictions: DataFrame, folder: Path, *, label: str, prediction: str) -> None:
    plt = pyplot()
    rows = predictions.select(label, prediction).limit(_PLOT_ROWS).collect()
    actual = [r[0] for r in rows]
    predicted = [r[1] for r in rows]
    residual = [a - p for a, p in zip(actual, predicted)]
    low, high = min(actual + predicted), max(actual + predicted)

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(actual, predicted, s=12, alpha=0.7)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect prediction")
    ax.set(xlabel=f"actual {label}", ylabel="predicted", title="Predicted vs actual (held-out split)")
    ax.legend()
    fig.savefig(folder / "predicted_vs_actual.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(predicted, residual, s=12, alpha=0.7)
    ax.axhline(0.0, color="grey", linestyle="--")
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (held-out split)")
    fig.savefig(folder / "residuals.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _stats_html(stats: list[dict[str, Any]]) -> str:
    columns = list(stats[0]) if stats else []
    head = "".join(f"<th>{c}</th>" for c in columns)

    def cell(v: Any) -> str:
        return f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{'' if v is None else v}</td>"

    body = "".join("<tr>" + "".join(cell(s[c]) for c in columns) + "</tr>" for s in stats)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Feature statistics</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
        f"</head><body><h1>Feature statistics (training split)</h1><table><tr>{head}</tr>{body}</table></body></html>"
    )


def write_reports(
    folder: Path,
    *,
    model: PipelineModel,
    statistics: list[dict[str, Any]],
    predictions: DataFrame,
    quality: dict[str, Any],
    profile: dict[str, Any],
    label: str,
    prediction: str,
) -> list[Path]:
    """Write the run's report files into ``folder`` and return their paths.

    ``statistics`` and ``profile`` come from :func:`profile_and_statistics` of the training split.

    Files: ``feature_statistics.html``, ``predicted_vs_actual.png``, ``residuals.png``,
    ``coefficients.csv`` or ``feature_importances.csv``, ``data_quality.json``, ``feature_profile.json``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_statistics.html").write_text(_stats_html(statistics), encoding="utf-8")
    _plots(predictions, folder, label=label, prediction=prediction)
    linear = hasattr(model.stages[-1], "coefficients")
    weights_file = folder / ("coefficients.csv" if linear else "feature_importances.csv")
    with open(weights_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["feature", "coefficient" if linear else "importance"])
        writer.writerows(model_weights(model))
    (folder / "data_quality.json").write_text(json.dumps(quality, indent=2), encoding="utf-8")
    (folder / "feature_profile.json").write_text(json.dumps(profile, indent=2), encoding="utf-8")
    return sorted(folder.iterdir())
