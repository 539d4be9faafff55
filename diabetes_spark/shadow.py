"""Shadow scoring: the challenger's predictions beside the champion's on the same batch, the rows
of its shadow table, and how far the two models' predictions lie apart.

The challenger's prediction rides along as one more column of the scored frame (:data:`SHADOW`), so
both models score the same pinned read of the input; the champion's rows are written without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

from pyspark.sql import functions as F

from diabetes_spark import scoring
from diabetes_spark.errors import SchemaError
from diabetes_spark.schemas import PREDICTION, column, finite

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame, Row

#: The challenger's prediction while both models' rows are one frame (never written under this name).
SHADOW = "__shadow_prediction"
#: Column of the shadow table holding the champion's prediction of the same row, beside the challenger's.
CHAMPION_PREDICTION = "champion_prediction"
#: Bins (deciles of the champion's predictions) of the challenger-against-champion stability index.
PSI_BINS = 10
_EPSILON = 1e-4  # the floor of an empty bin's share, as in :mod:`drift`
_QUANTILE_ACCURACY = 10_000


def check_input_columns(columns: list[str]) -> None:
    """Fail when an input column has the name of a column shadow scoring adds: its values would be
    replaced in the shadow table.

    Raises:
        SchemaError: Naming the clashing columns.
    """
    clashing = [c for c in columns if c.lower() in (SHADOW, CHAMPION_PREDICTION)]
    if clashing:
        raise SchemaError(
            f"input column(s) {clashing} have the name of a column shadow scoring adds ({CHAMPION_PREDICTION}): "
            "their values would be replaced. Rename or drop them, or score without --shadow."
        )


def with_challenger(annotated: DataFrame, model: PipelineModel | None, *, compiled: Column | None) -> DataFrame:
    """``annotated`` with the challenger's prediction in :data:`SHADOW` (null where not finite)."""
    scored = scoring.predict(annotated, model, compiled=compiled)
    prediction = F.col(PREDICTION)
    return scored.withColumn(PREDICTION, F.when(finite(prediction), prediction)).withColumnRenamed(PREDICTION, SHADOW)


def shadow_rows(valid: DataFrame, lineage: scoring.Lineage) -> DataFrame:
    """The shadow table's rows of the champion's valid scored rows: the challenger's prediction and
    lineage in the predictions table's layout, then the champion's prediction in
    :data:`CHAMPION_PREDICTION`, last."""
    swapped = valid.withColumns({CHAMPION_PREDICTION: F.col(PREDICTION), PREDICTION: F.col(SHADOW)}).drop(SHADOW)
    ordered = scoring.with_lineage(swapped, lineage)
    rest = [column(c) for c in ordered.columns if c != CHAMPION_PREDICTION]
    return ordered.select(*rest, F.col(CHAMPION_PREDICTION))


def compare(batch: DataFrame, *, tolerance: float) -> dict[str, float]:
    """How the challenger's predictions (``prediction``) differ from the champion's
    (:data:`CHAMPION_PREDICTION`) over the rows of ``batch`` where both are numbers, in two passes.

    Returns:
        ``shadow_mean_abs_diff``, ``shadow_max_abs_diff``, ``shadow_corr`` (Pearson),
        ``shadow_frac_differing`` (share of rows differing by more than ``tolerance``),
        ``shadow_psi`` (challenger against champion, over the champion's deciles) and
        ``shadow_rows_compared``.
    """
    champion, challenger = F.col(CHAMPION_PREDICTION), F.col(PREDICTION)
    both = batch.where(champion.isNotNull() & challenger.isNotNull()).select(champion, challenger)
    diff = F.abs(challenger - champion)
    probabilities = [i / PSI_BINS for i in range(1, PSI_BINS)]
    row = cast(
        "Row",
        both.agg(
            F.count(F.lit(1)).alias("n"),
            F.avg(diff).alias("mean"),
            F.max(diff).alias("max"),
            F.corr(challenger, champion).alias("corr"),
            F.avg(F.when(diff > F.lit(tolerance), 1.0).otherwise(0.0)).alias("differing"),
            F.percentile_approx(champion, probabilities, _QUANTILE_ACCURACY).alias("edges"),
        ).first(),  # an aggregate without grouping: always one row
    )
    rows = int(row["n"])
    out = {
        "shadow_rows_compared": float(rows),
        "shadow_mean_abs_diff": _number(row["mean"]),
        "shadow_max_abs_diff": _number(row["max"]),
        "shadow_corr": _number(row["corr"]),
        "shadow_frac_differing": _number(row["differing"]),
        "shadow_psi": math.nan,
    }
    if rows:
        out["shadow_psi"] = _psi(both, sorted(set(row["edges"] or [])))
    return out


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _bin(value: Column, edges: list[float]) -> Column:
    """The bin of ``value``: how many ``edges`` it reaches (0 .. len(edges))."""
    index: Column = F.lit(0)
    for edge in edges:
        index = index + (value >= F.lit(edge)).cast("int")
    return index


def _psi(both: DataFrame, edges: list[float]) -> float:
    """Population stability index of the challenger's predictions against the champion's."""
    champion, challenger = _bin(F.col(CHAMPION_PREDICTION), edges), _bin(F.col(PREDICTION), edges)
    bins = range(len(edges) + 1)
    counts = [F.count(F.when(champion == i, 1)).alias(f"e{i}") for i in bins]
    counts += [F.count(F.when(challenger == i, 1)).alias(f"a{i}") for i in bins]
    row = cast("Row", both.agg(F.count(F.lit(1)).alias("n"), *counts).first())
    total = max(int(row["n"]), 1)
    value = 0.0
    for i in bins:
        expected = max(row[f"e{i}"] / total, _EPSILON)
        actual = max(row[f"a{i}"] / total, _EPSILON)
        value += (actual - expected) * math.log(actual / expected)
    return value
