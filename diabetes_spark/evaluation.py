"""Regression metrics, the reports logged as run artifacts, and the feature profile used for drift.

Everything here takes DataFrames and returns values or writes files into a folder it is given;
logging them to MLflow is the caller's business.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from diabetes_spark.schemas import CATEGORICAL, REASON, feature_names, numeric_feature_names, quoted

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

__all__ = [
    "METRICS",
    "regression_metrics",
    "is_better",
    "feature_statistics",
    "feature_profile",
    "profile_and_statistics",
    "bin_names",
    "JOINT_CODES",
    "BinCodes",
    "count_codes",
    "profile_counts",
    "psi_from_counts",
    "data_quality_report",
    "model_weights",
    "write_reports",
]

METRICS = ("rmse", "mae", "r2", "mse")
_LARGER_IS_BETTER = {"r2"}
_EPSILON = 1e-4
_PLOT_ROWS = 10_000
MISSING_BIN = "missing"


def regression_metrics(predictions: DataFrame, *, label: str, prediction: str) -> dict[str, float]:
    """RMSE, MAE, R2 and MSE in one aggregate pass.

    The same definitions as Spark's ``RegressionEvaluator`` (R2 = 1 - SSE / SST, not through the
    origin), which would run one Spark job per metric.
    """
    error = F.col(label) - F.col(prediction)
    row = predictions.agg(
        F.avg(error * error).alias("mse"), F.avg(F.abs(error)).alias("mae"), F.var_pop(label).alias("var")
    ).first()
    mse, mae, variance = float(row["mse"]), float(row["mae"]), float(row["var"])
    r2 = 1.0 - mse / variance if variance > 0 else float("nan")
    return {"rmse": math.sqrt(mse), "mae": mae, "r2": r2, "mse": mse}


def is_better(metric: str, challenger: float, champion: float) -> bool:
    """True when ``challenger`` strictly beats ``champion`` on ``metric``."""
    return challenger > champion if metric in _LARGER_IS_BETTER else challenger < champion


#: Quantiles computed per numeric feature: quartiles for the statistics, deciles for the profile.
_QUARTILES = (0.25, 0.5, 0.75)


def _summary(df: DataFrame, probabilities: list[float]) -> dict[str, Any]:
    """Count, mean, std, min, max and approximate quantiles of every numeric feature, and the
    categories of every categorical one, in one aggregate pass."""
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
    return df.agg(*aggs).first().asDict()


#: ``percentile_approx`` accuracy: relative error 1/accuracy = 0.001 of the rows.
_QUANTILE_ACCURACY = 1000


def feature_statistics(df: DataFrame) -> list[dict[str, Any]]:
    """Count, missing %, mean, std, min, quartiles and max of each numeric feature (one pass)."""
    return _statistics(_summary(df, list(_QUARTILES)), list(_QUARTILES))


def _statistics(row: dict[str, Any], probabilities: list[float]) -> list[dict[str, Any]]:
    at = {p: probabilities.index(p) for p in _QUARTILES}
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


def feature_profile(df: DataFrame, *, bins: int = 10) -> dict[str, Any]:
    """The training distribution of every feature, for the population stability index at scoring.

    Numeric features get quantile bin edges plus a ``missing`` bin; categorical ones their
    categories (anything else at scoring falls in ``other``). Fractions are of all rows.
    """
    return profile_and_statistics(df, bins=bins)[0]


def profile_and_statistics(df: DataFrame, *, bins: int = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`feature_profile` and :func:`feature_statistics` of ``df`` in two passes (not eight):
    one for the statistics, bin edges and categories, one for the counts per bin."""
    deciles = [round(i / bins, 10) for i in range(1, bins)]
    probabilities = sorted(set(deciles) | set(_QUARTILES))
    row = _summary(df, probabilities)
    profile: dict[str, Any] = {"bins": {}, "expected": {}}
    for c in numeric_feature_names():
        quantiles = dict(zip(probabilities, row[f"{c}__quantiles"] or []))
        profile["bins"][c] = sorted({quantiles[p] for p in deciles if p in quantiles})
    for c in CATEGORICAL:
        profile["bins"][c] = sorted(v for v in row[f"{c}__categories"] if v is not None)
    counts = profile_counts(df, profile)
    total = counts.pop("__rows")
    profile["rows"] = total
    profile["expected"] = _fractions(profile, counts, total)
    return profile, _statistics(row, probabilities)


def _bin_labels(profile: dict[str, Any], feature: str) -> list[str]:
    edges = profile["bins"][feature]
    if feature in CATEGORICAL:
        return [*edges, "other", MISSING_BIN]
    return [str(i) for i in range(len(edges) + 1)] + [MISSING_BIN]


def bin_names(profile: dict[str, Any]) -> list[str]:
    """``feature__label`` for every bin of every profiled feature."""
    return [f"{feature}__{label}" for feature in profile["bins"] for label in _bin_labels(profile, feature)]


#: The most codes one joint bin code takes (see :class:`BinCodes`).
JOINT_CODES = 8192


def _bin_index(profile: dict[str, Any], feature: str) -> str:
    """SQL for the position, in ``_bin_labels``, of the bin a row's value of ``feature`` falls in.

    Numeric bins are ``[lower, upper)`` and found by binary search over the (sorted, distinct) edges,
    written as nested ``IF``s with doubles as exact ``D`` literals: about four comparisons a row.
    """
    edges = profile["bins"][feature]
    labels = _bin_labels(profile, feature)
    name = quoted(feature)
    if feature in CATEGORICAL:
        cases = " ".join(f"WHEN {name} = {_sql_string(v)} THEN {i}" for i, v in enumerate(edges))
        return f"CASE WHEN {name} IS NULL THEN {labels.index(MISSING_BIN)} {cases} ELSE {labels.index('other')} END"

    def search(low: int, high: int) -> str:  # the first i in [low, high] with value < edges[i], else high
        if low == high:
            return str(low)
        middle = (low + high) // 2
        return f"IF({name} < {float(edges[middle])!r}D, {search(low, middle)}, {search(middle + 1, high)})"

    return f"IF({name} IS NULL, {labels.index(MISSING_BIN)}, {search(0, len(edges))})"


class BinCodes:
    """Integer codes that count the rows in every bin of every profiled feature with one grouped
    aggregate, and the way back from a code to the bins it counts.

    Consecutive features are coded jointly while the product of their bin counts stays within
    :data:`JOINT_CODES`: the code of a group is ``start + i1 + n1 * (i2 + n2 * i3)`` for bin positions
    ``i`` and bin counts ``n``, and one row of the grouped result counts one combination, so the
    marginal count of each bin is the sum over the combinations it is in. A row thus explodes into
    three or four codes instead of one per feature, and the grouped result stays within a few
    thousand rows. One ``count`` per bin instead would exceed Spark's whole-stage code generation
    limit (``spark.sql.codegen.maxFields``, 100) and run the aggregate interpreted, about 3x slower.

    Args:
        profile: A :func:`feature_profile`.
        offset: The first code: smaller ones are the caller's own.
    """

    def __init__(self, profile: dict[str, Any], *, offset: int = 0) -> None:
        groups: list[list[str]] = []
        size = 0
        for feature in profile["bins"]:
            bins = len(_bin_labels(profile, feature))
            if groups and size * bins <= JOINT_CODES:
                groups[-1].append(feature)
                size *= bins
            else:
                groups.append([feature])
                size = bins
        self.columns: list[Column] = []
        self._groups: list[tuple[int, int, list[list[str]]]] = []
        start = offset
        for group in groups:
            terms, weight, names = [], 1, []
            for feature in group:
                terms.append(f"{weight} * ({_bin_index(profile, feature)})")
                names.append([f"{feature}__{label}" for label in _bin_labels(profile, feature)])
                weight *= len(names[-1])
            self.columns.append(F.expr(f"{start} + {' + '.join(terms)}"))
            self._groups.append((start, weight, names))
            start += weight
        self.end = start

    def bins_of(self, code: int) -> list[str]:
        """The bins (``feature__label``) one code counts a row in."""
        for start, size, names in self._groups:
            if start <= code < start + size:
                rest, bins = code - start, []
                for labels in names:
                    rest, position = divmod(rest, len(labels))
                    bins.append(labels[position])
                return bins
        raise ValueError(f"code {code} is not a bin code (codes {self._groups[0][0]} to {self.end - 1})")


def _sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def count_codes(df: DataFrame, codes: Column, names_of: Callable[[int], Sequence[str]], names: Sequence[str]) -> dict[str, int]:
    """How many rows each of ``names`` counts, where the integer-array Column ``codes`` gives each
    row's codes (nulls skipped) and ``names_of(code)`` the names one code counts: every name, zero
    included, from one grouped aggregate (see :class:`BinCodes`)."""
    counted = df.select(F.explode(codes).alias("code")).where(F.col("code").isNotNull()).groupBy("code").count()
    counts = dict.fromkeys(names, 0)
    for code, count in counted.collect():
        for name in names_of(code):
            counts[name] += count
    return counts


def profile_counts(df: DataFrame, profile: dict[str, Any], *, where: Any = None) -> dict[str, int]:
    """Rows per bin of every profiled feature (``feature__label``) and ``__rows``, in one pass.

    ``where`` (a boolean Column) restricts the counts to matching rows.
    """
    bins = BinCodes(profile, offset=1)
    codes = F.array(F.lit(0), *bins.columns)
    if where is not None:
        codes = F.when(where, codes)
    return count_codes(df, codes, lambda code: ["__rows"] if code == 0 else bins.bins_of(code), ["__rows", *bin_names(profile)])


def _fractions(profile: dict[str, Any], counts: dict[str, int], total: int) -> dict[str, dict[str, float]]:
    return {
        feature: {label: counts[f"{feature}__{label}"] / max(total, 1) for label in _bin_labels(profile, feature)}
        for feature in profile["bins"]
    }


def psi_from_counts(profile: dict[str, Any], counts: dict[str, int]) -> dict[str, float]:
    """Population stability index per feature: sum over bins of ``(a - e) * ln(a / e)``.

    ``counts`` is the result of :func:`profile_counts` over the scored rows. Empty bins
    are floored at a small epsilon so the index stays finite. 0 means the same distribution;
    above 0.2 is the usual sign of a material shift.
    """
    counts = dict(counts)
    total = counts.pop("__rows")
    actual = _fractions(profile, counts, total)
    psi = {}
    for feature, expected in profile["expected"].items():
        value = 0.0
        for label, e in expected.items():
            a = max(actual[feature].get(label, 0.0), _EPSILON)
            e = max(e, _EPSILON)
            value += (a - e) * math.log(a / e)
        psi[feature] = value
    return psi


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
    missing = valid.agg(*[F.count(F.when(F.col(c).isNull(), 1)).alias(c) for c in feature_names()]).first()
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
    if hasattr(estimator, "coefficients"):
        weights = list(zip(names, estimator.coefficients.toArray().tolist()))
        return [*weights, ("intercept", float(estimator.intercept))]
    return list(zip(names, estimator.featureImportances.toArray().tolist()))


def _plots(predictions: DataFrame, folder: Path, *, label: str, prediction: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
