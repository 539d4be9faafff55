"""``python -m diabetes_spark``: the same as the ``diabetes-spark`` console script."""

from __future__ import annotations

from diabetes_spark.cli import entry

entry()
