"""Shadow scoring: the challenger's predictions beside the champion's on the same batch, the rows
of its shadow table, and how far the two models' predictions lie apart.

The challenger's prediction rides along as one more column of the scored frame (:data:`SHADOW`), so
both models score the same pinned read of the input; the champion's rows are written without it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from diabetes_spark import scoring
from diabetes_spark.errors import SchemaError
from diabetes_spark.schemas import PREDICTION, column, finite, load_schema

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame

#: The challenger's prediction while both models' rows are one frame (never written under this name).
SHADOW = "__shadow_prediction"
#: Column of the shadow table holding the champion's prediction of the same row, beside the challenger's.
CHAMPION_PREDICTION = "champion_prediction"
#: Bins (deciles of the champion's predictions) of the challenger-against-champion stability index.
PSI_BINS = 10
_EPSILON = 1e-4  # the floor of an empty bin's share, as in :mod:`drift`
_QUANTILE_ACCURACY = 10_000
#: Quantiles per model the stability index is read from: shares are exact to one in this many.
_GRID = 1000


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
    """The shadow table's rows of the champion's valid scored rows: the input's own columns (those
    not among the model's features, such as a patient id, to join the predictions table on), the
    challenger's prediction, the champion's in :data:`CHAMPION_PREDICTION`, then the lineage naming the
    challenger. The features stay in the predictions table: a second copy would double the write."""
    swapped = valid.withColumns({CHAMPION_PREDICTION: F.col(PREDICTION), PREDICTION: F.col(SHADOW)}).drop(SHADOW)
    ordered = scoring.with_lineage(swapped, lineage)
    layout = set(load_schema("predictions").fieldNames())
    own = [column(c) for c in ordered.columns if c not in layout and c != CHAMPION_PREDICTION]
    return ordered.select(*own, F.col(PREDICTION), F.col(CHAMPION_PREDICTION), *scoring.LINEAGE_COLUMNS)


def aggregates(*, tolerance: float) -> list[Column]:
    """The comparison's aggregates over a scored frame's ``prediction`` (the champion's) and
    :data:`SHADOW` (the challenger's), for :func:`drift.monitor`'s pass: both models' predictions
    are compared where both are numbers, without a scan of their own."""
    champion, challenger = F.col(PREDICTION), F.col(SHADOW)
    pair = champion.isNotNull() & challenger.isNotNull()
    diff = F.abs(challenger - champion)  # null where either is
    grid = [i / _GRID for i in range(1, _GRID)]
    return [
        F.count(F.when(pair, 1)).alias("shadow_rows_compared"),
        F.avg(diff).alias("shadow_mean_abs_diff"),
        F.max(diff).alias("shadow_max_abs_diff"),
        F.corr(challenger, champion).alias("shadow_corr"),
        F.avg(F.when(diff > F.lit(tolerance), 1.0).when(pair, 0.0)).alias("shadow_frac_differing"),
        F.percentile_approx(F.when(pair, champion), grid, _QUANTILE_ACCURACY).alias("__champion_grid"),
        F.percentile_approx(F.when(pair, challenger), grid, _QUANTILE_ACCURACY).alias("__challenger_grid"),
    ]


def comparison(extra: dict[str, Any]) -> dict[str, float]:
    """The comparison from :func:`aggregates`' values (empty ``extra``: no row was scored).

    Returns:
        ``shadow_mean_abs_diff``, ``shadow_max_abs_diff``, ``shadow_corr`` (Pearson),
        ``shadow_frac_differing`` (share of rows differing by more than the tolerance),
        ``shadow_psi`` (challenger against champion, over the champion's deciles) and
        ``shadow_rows_compared``.
    """
    names = ("shadow_mean_abs_diff", "shadow_max_abs_diff", "shadow_corr", "shadow_frac_differing")
    out = {"shadow_rows_compared": float(extra.get("shadow_rows_compared") or 0)}
    out.update({name: _number(extra.get(name)) for name in names})
    out["shadow_psi"] = psi(extra.get("__champion_grid") or [], extra.get("__challenger_grid") or [])
    return out


def psi(champion_grid: list[float], challenger_grid: list[float]) -> float:
    """Population stability index of the challenger's predictions against the champion's, over the
    champion's deciles (:data:`PSI_BINS` bins), from each model's quantiles on the same fine grid.

    A bin's share of a model's predictions is read off that model's quantiles: the share below an
    edge is the share of the grid's quantiles below it, within one grid step (``1/_GRID``) of the
    exact count; the edges come from the same pass, so no second scan bins the rows.
    """
    if not champion_grid or not challenger_grid:
        return math.nan
    step = _GRID // PSI_BINS
    edges = sorted({champion_grid[i * step - 1] for i in range(1, PSI_BINS)})
    expected, actual = _shares(champion_grid, edges), _shares(challenger_grid, edges)
    value = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, _EPSILON), max(a, _EPSILON)
        value += (a - e) * math.log(a / e)
    return value


def _shares(grid: list[float], edges: list[float]) -> list[float]:
    """Each bin's share of the predictions whose quantiles are ``grid``; a bin holds the values from
    its lower edge up to (not including) its upper one."""
    below = [bisect.bisect_left(grid, edge) / (len(grid) + 1) for edge in edges]
    bounds = [0.0, *below, 1.0]
    return [hi - lo for lo, hi in itertools.pairwise(bounds)]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
