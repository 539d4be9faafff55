"""A child process of tests/test_incremental.py: an incremental scoring run whose micro-batch pauses
in a write (of its predictions, or of its rejects once its predictions committed) after creating a
file, so the test can kill the whole process group there.

Usage: ``python tests/incremental_child.py INPUT OUTPUT MLFLOW_HOME predictions|rejects BEGUN``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

from diabetes_spark import jobs, schemas, scoring
from diabetes_spark.params import ScoreParams
from diabetes_spark.registry import MlflowLocation
from diabetes_spark.session import get_spark


def _paused(df, begun: str):
    def hook(value):  # no hints: PySpark would read them as a pandas UDF signature
        open(begun, "a").close()
        time.sleep(3600)  # until killed
        return value

    return df.coalesce(1).withColumn("batch_id", F.udf(hook, "string")("batch_id"))


def main(table: str, output: str, home: str, point: str, begun: str) -> None:
    if point == "predictions":
        with_lineage = scoring.with_lineage
        scoring.with_lineage = lambda scored, lineage: _paused(with_lineage(scored, lineage), begun)  # type: ignore[method-assign]
    else:
        rejected_rows = schemas.rejected_rows
        schemas.rejected_rows = lambda *a, **k: _paused(rejected_rows(*a, **k), begun)  # type: ignore[method-assign]
    spark = get_spark("incremental-child", master="local[1]", conf={"spark.sql.shuffle.partitions": "1"})
    params = ScoreParams(
        input=table, output=output, model_name="shared_model", experiment="incremental-tests", incremental="true"
    )
    jobs.run_batch_scoring(spark, params, mlflow_location=MlflowLocation.local(Path(home)))


if __name__ == "__main__":
    main(*sys.argv[1:6])
