"""``python -m diabetes_spark``: the same as the ``diabetes-spark`` console script."""

from __future__ import annotations

import sys

from diabetes_spark.cli import main

sys.exit(main())
