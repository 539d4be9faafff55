"""Drift: the training feature profile, bin codes, the population stability index, and the
monitor that counts a scored batch (rows, unseen categories, prediction statistics, drift bins) in
one pass.

The profile is logged with the training run; scoring compares each batch against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from diabetes_spark.evaluation import QUARTILES, statistics, summary
from diabetes_spark.schemas import CATEGORICAL, PREDICTION, REASON, numeric_feature_names, quoted

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pyspark.sql import DataFrame


MISSING_BIN = "missing"
_EPSILON = 1e-4
#: Batches smaller than this get a drift score but no drift warning: with ten bins per feature, the
#: population stability index of a few dozen rows is mostly sampling noise.
DRIFT_MIN_ROWS = 100


def profile_and_statistics(df: DataFrame, *, bins: int = 10) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The training distribution of every feature (its profile, for the population stability index
    at scoring) and the per-feature statistics of ``df``, in two passes (not eight): one for the
    statistics, bin edges and categories, one for the counts per bin.

    Numeric features get quantile bin edges plus a ``missing`` bin; categorical ones their
    categories (anything else at scoring falls in ``other``). Fractions are of all rows.
    """
    deciles = [round(i / bins, 10) for i in range(1, bins)]
    probabilities = sorted(set(deciles) | set(QUARTILES))
    row = summary(df, probabilities)
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
    return profile, statistics(row, probabilities)


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
    limit (``spark.sql.codegen.maxFields``) and run the aggregate interpreted, much slower.

    Args:
        profile: A :func:`profile_and_statistics` profile.
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


def count_codes(
    df: DataFrame, codes: Column, names_of: Callable[[int], Sequence[str]], names: Sequence[str]
) -> dict[str, int]:
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
    return count_codes(
        df, codes, lambda code: ["__rows"] if code == 0 else bins.bins_of(code), ["__rows", *bin_names(profile)]
    )


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


@dataclass(frozen=True)
class BatchReport:
    """What the monitor found in a scored batch.

    ``statistics`` holds the prediction mean, std, min and max of the scored rows (``None`` when
    none was scored); ``drift`` the index per profiled feature; ``drifted`` the features above the
    threshold, judged only from :data:`DRIFT_MIN_ROWS` scored rows on; ``extra`` the caller's own
    aggregates over the scored rows (:func:`monitor`'s ``extra``), empty when none was scored, and
    ``caller_codes`` the rows counted in each of the caller's own codes (``codes``).
    """

    rows_in: int
    rows_scored: int
    rows_rejected: int
    unseen_sex: int
    statistics: dict[str, float | None]
    drift: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    caller_codes: dict[int, int] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """Whether the batch is large enough for a drift verdict."""
        return self.rows_scored >= DRIFT_MIN_ROWS


#: The first of the codes a caller of :func:`monitor` may count rows in; the bins' codes stay below.
CALLER_CODES = 1 << 24
#: What the monitor's own codes count: a scored row, a scored row of unseen SEX, a rejected row.
_STATUS = (("rows_in", "rows_scored"), ("unseen_sex",), ("rows_in", "rows_rejected"))
_PREDICTION_STATS = {
    "prediction_mean": F.mean,
    "prediction_std": F.stddev,
    "prediction_min": F.min,
    "prediction_max": F.max,
}


def monitor(
    scored: DataFrame,
    *,
    unseen: Column,
    profile: dict[str, Any] | None,
    threshold: float,
    carried: Sequence[str] = (),
    extra: Sequence[Column] = (),
    codes: Sequence[Column] = (),
) -> BatchReport:
    """Everything a scoring run reports about its rows, from one grouped aggregate over ``scored``.

    Each row gets the codes it counts in (:data:`_STATUS`, then, when scored, the joint drift bin
    codes of :class:`BinCodes`); one aggregate grouped by code counts them and summarises the
    predictions of the scored rows. ``unseen`` is true for a row whose category the model never saw.

    Args:
        scored: Validated (``REASON`` column) and scored (``prediction``) rows.
        unseen: Boolean Column: the row's SEX is unknown to the model.
        profile: The training run's :func:`profile_and_statistics` profile; ``None``: drift is not scored.
        threshold: Population stability index above which a feature counts as drifted.
        carried: Further columns of ``scored`` that ``extra`` reads.
        extra: Named aggregates over ``prediction`` and ``carried`` of the scored rows, taken in the
            same pass (into :attr:`BatchReport.extra`), so a caller's summary costs no scan of its own.
        codes: The caller's own integer codes of a scored row (null: none), from :data:`CALLER_CODES`
            on; the rows of each are counted (into :attr:`BatchReport.caller_codes`), as the bins are.
    """
    valid = F.col(REASON).isNull()
    bins = BinCodes(profile or {"bins": {}}, offset=len(_STATUS))
    if bins.end > CALLER_CODES:
        raise ValueError(f"{bins.end} bin codes reach the caller's codes ({CALLER_CODES} on)")
    row_codes = [F.lit(0), F.when(unseen, F.lit(1)), *bins.columns, *codes]
    codes_of = F.when(valid, F.array(*row_codes)).otherwise(F.array(F.lit(2)))
    code = F.col("code")
    exploded = scored.select(F.explode(codes_of).alias("code"), PREDICTION, *carried).where(code.isNotNull())
    # Only a scored row's own code (0) carries its values: the other codes' rows only count.
    coded = exploded.select(code, *[F.when(code == 0, F.col(c)).alias(c) for c in (PREDICTION, *carried)])
    summaries = [fn(F.col(PREDICTION)).alias(name) for name, fn in _PREDICTION_STATS.items()]
    counted = list(dict.fromkeys(name for names in _STATUS for name in names))
    counts = dict.fromkeys([*counted, *(bin_names(profile) if profile else [])], 0)
    stats: dict[str, Any] = dict.fromkeys(_PREDICTION_STATS)
    extras: dict[str, Any] = {}
    callers: dict[int, int] = {}
    for row in coded.groupBy("code").agg(F.count(F.lit(1)).alias("rows"), *summaries, *extra).collect():
        if row["code"] >= CALLER_CODES:
            callers[row["code"]] = row["rows"]
            continue
        for name in _STATUS[row["code"]] if row["code"] < len(_STATUS) else bins.bins_of(row["code"]):
            counts[name] += row["rows"]
        if row["code"] == 0:
            stats.update({name: row[name] for name in _PREDICTION_STATS})
            extras = {k: v for k, v in row.asDict().items() if k not in stats and k not in ("code", "rows")}
    totals = {name: counts.pop(name) for name in counted}
    drift = psi_from_counts(profile, {"__rows": totals["rows_scored"], **counts}) if profile else {}
    judged = totals["rows_scored"] >= DRIFT_MIN_ROWS
    drifted = sorted(f for f, v in drift.items() if v > threshold) if judged else []
    return BatchReport(**totals, statistics=stats, drift=drift, drifted=drifted, extra=extras, caller_codes=callers)
