"""Shadow scoring: the challenger's predictions beside the champion's on the same batch, the rows
of its shadow table, and how far the two models' predictions lie apart.

The challenger's prediction rides along as one more column of the scored frame (:data:`SHADOW`), so
both models score the same pinned read of the input; the champion's rows are written without it.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from diabetes_spark import drift, scoring
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
#: Buckets per power of two of the predictions' histograms (:func:`bucket`): each under 0.07% wide.
_STEPS = 1024
_EXPONENTS = 1100  # added to a binary exponent: every bucket of a positive number is above 0
_SPAN = 2 * (2 * _EXPONENTS + 1) * _STEPS  # more than the buckets' range, either side of 0
#: Where the monitor's codes of the champion's buckets and of the challenger's sit (bucket 0 at each).
_CHAMPION_CODES = drift.CALLER_CODES + _SPAN
_CHALLENGER_CODES = drift.CALLER_CODES + 3 * _SPAN


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
    return [
        F.count(F.when(pair, 1)).alias("shadow_rows_compared"),
        F.avg(diff).alias("shadow_mean_abs_diff"),
        F.max(diff).alias("shadow_max_abs_diff"),
        F.corr(challenger, champion).alias("shadow_corr"),
        F.avg(F.when(diff > F.lit(tolerance), 1.0).when(pair, 0.0)).alias("shadow_frac_differing"),
    ]


def codes() -> list[Column]:
    """Each compared row's histogram codes for :func:`drift.monitor`: the bucket of the champion's
    prediction and of the challenger's (:func:`bucket`), so the monitor's pass counts both
    histograms, from which :func:`psi` reads the champion's deciles and both models' shares."""
    champion, challenger = F.col(PREDICTION), F.col(SHADOW)
    pair = champion.isNotNull() & challenger.isNotNull()
    return [
        F.when(pair, bucket(champion) + F.lit(_CHAMPION_CODES)).cast("int"),
        F.when(pair, bucket(challenger) + F.lit(_CHALLENGER_CODES)).cast("int"),
    ]


def bucket(value: Column) -> Column:
    """An integer in the order of ``value``: ``log2(|value|)`` in steps of ``1/_STEPS``, so a bucket
    spans the same small relative width whatever the predictions' scale, signed as ``value``, 0 its
    own bucket. One logarithm a row: the monitor's pass stays about as cheap as without it."""
    key = F.floor(F.log2(F.abs(value)) * _STEPS) + _EXPONENTS * _STEPS  # log2 of a finite double: -1075 on
    return F.when(value > 0, key).when(value < 0, -key).when(value == 0, 0)


def comparison(extra: dict[str, Any], counted: dict[int, int]) -> dict[str, float]:
    """The comparison from :func:`aggregates`' values and the rows counted in :func:`codes`
    (empty: no row was scored).

    Returns:
        ``shadow_mean_abs_diff``, ``shadow_max_abs_diff``, ``shadow_corr`` (Pearson),
        ``shadow_frac_differing`` (share of rows differing by more than the tolerance),
        ``shadow_psi`` (challenger against champion, over the champion's deciles) and
        ``shadow_rows_compared``.
    """
    names = ("shadow_mean_abs_diff", "shadow_max_abs_diff", "shadow_corr", "shadow_frac_differing")
    out = {"shadow_rows_compared": float(extra.get("shadow_rows_compared") or 0)}
    out.update({name: _number(extra.get(name)) for name in names})
    champion, challenger = _histogram(counted, _CHAMPION_CODES), _histogram(counted, _CHALLENGER_CODES)
    out["shadow_psi"] = psi(champion, challenger)
    return out


def _histogram(counted: dict[int, int], zero: int) -> dict[int, int]:
    """Bucket -> rows of the codes around ``zero`` (the code of bucket 0)."""
    return {code - zero: n for code, n in counted.items() if abs(code - zero) < _SPAN}


def psi(champion: dict[int, int], challenger: dict[int, int]) -> float:
    """Population stability index of the challenger's predictions against the champion's, over the
    champion's deciles (:data:`PSI_BINS` bins), from each model's histogram (bucket -> rows).

    A decile's edge is the bucket boundary nearest the champion's quantile; the bins hold whole
    buckets, so each model's share of a bin is an exact count, and the edges sit within half a
    bucket's rows of the exact deciles.
    """
    total = sum(champion.values())
    if not total or not challenger:
        return math.nan
    targets = [total * i / PSI_BINS for i in range(1, PSI_BINS)]
    edges: list[int] = []
    cumulative = 0
    keys = sorted(champion)
    for i, key in enumerate(keys):
        before, cumulative = cumulative, cumulative + champion[key]
        while targets and cumulative >= targets[0]:
            target = targets.pop(0)  # the bucket boundary nearer the decile is its edge
            below_is_nearer = target - before <= cumulative - target or i + 1 == len(keys)
            edges.append(key if below_is_nearer else keys[i + 1])
    edges = sorted(set(edges))
    expected, actual = _shares(champion, edges), _shares(challenger, edges)
    value = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, _EPSILON), max(a, _EPSILON)
        value += (a - e) * math.log(a / e)
    return value


def _shares(histogram: dict[int, int], edges: list[int]) -> list[float]:
    """Each bin's share of ``histogram``'s rows; a bucket at or past an edge lies above it."""
    rows = [0] * (len(edges) + 1)
    for key, n in histogram.items():
        rows[bisect.bisect_right(edges, key)] += n
    total = sum(rows)
    return [n / total for n in rows]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
