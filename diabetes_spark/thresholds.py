"""``validation_thresholds``: the bounds a new version must meet, as written in a flag or widget
(``rmse<=60,r2>=0.35``), read once, before any work is done."""

from __future__ import annotations

import math
import re

from diabetes_spark.errors import ParamError

#: What ``validation_thresholds`` may hold: each metric with the one comparison that MLflow's
#: ``MetricThreshold`` gives it (lower is better for the errors, higher for r2).
THRESHOLD_DIRECTIONS = {"rmse": "<=", "mae": "<=", "mse": "<=", "r2": ">="}
THRESHOLD_FORM = "comma-separated METRIC<=NUMBER for rmse, mae, mse and METRIC>=NUMBER for r2, e.g. rmse<=60,r2>=0.35"


def parse_thresholds(text: str) -> dict[str, float]:
    """``validation_thresholds`` (``rmse<=60,r2>=0.35``) as metric -> bound; empty text: none.

    Raises:
        ParamError: An unknown metric, an operator other than the metric's, a bound that is not a
            finite number, or a metric given twice; the message gives the accepted form.
    """
    bounds: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9_]+)\s*([<>=!]+)\s*(\S+)", item)
        if match is None:
            raise ParamError(f"validation_thresholds: cannot read {item!r}; expected {THRESHOLD_FORM}")
        metric, operator, number = match.group(1).lower(), match.group(2), match.group(3)
        if metric not in THRESHOLD_DIRECTIONS:
            raise ParamError(f"validation_thresholds: unknown metric {metric!r} in {item!r}; expected {THRESHOLD_FORM}")
        if operator != THRESHOLD_DIRECTIONS[metric]:
            raise ParamError(
                f"validation_thresholds: {metric} takes {THRESHOLD_DIRECTIONS[metric]}, not {operator!r}, "
                f"in {item!r}; expected {THRESHOLD_FORM}"
            )
        try:
            bound = float(number)
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound):
            raise ParamError(
                f"validation_thresholds: {number!r} is not a number in {item!r}; expected {THRESHOLD_FORM}"
            )
        if metric in bounds:
            raise ParamError(f"validation_thresholds: {metric} is given twice in {text!r}; expected {THRESHOLD_FORM}")
        bounds[metric] = bound
    return bounds
