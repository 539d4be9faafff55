"""diabetes_spark: Spark ML training and batch scoring of diabetes progression over Delta tables."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
