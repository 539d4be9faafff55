"""``python -m benchmarks.incremental``: an incremental scoring run that finds M new rows in an N-row
Delta input, against a whole-batch scoring run of an M-row table, in one process and Spark session.

The input is the N-row benchmark table (:mod:`benchmarks.data`) copied once; a first incremental run
scores all of it (timed, for scale). Each repetition then appends M rows (the M-row benchmark table) as
one commit, times ``score --incremental`` (which finds those M rows), and times ``score`` of the
M-row table as one batch (a fixed batch id, so each repetition replaces its batch). The ratio is of the
medians: near 1 means an incremental run costs what its new rows cost, not what the input's history does.

    python -m benchmarks.incremental --rows 10000000 --new-rows 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.data import generate
from benchmarks.run import OUT
from diabetes_spark import jobs
from diabetes_spark.params import ScoreParams, TrainParams
from diabetes_spark.registry import MlflowLocation

MODEL = "bench_incremental"


def _timed(fn: Any) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    summary = fn()
    return time.perf_counter() - start, summary


def measure(spark: Any, rows: int, new_rows: int, reps: int, home: Path) -> dict[str, Any]:
    """Seconds of each incremental run (M new rows in a growing N-row input) and of each M-row batch run."""
    history, new = generate(spark, rows, OUT / "data")["delta"], generate(spark, new_rows, OUT / "data")["delta"]
    table = home / "input"
    spark.read.format("delta").load(history).drop("Y").write.format("delta").save(str(table))
    common = {"model_name": MODEL, "experiment": "bench-incremental"}
    incremental = ScoreParams(input=str(table), output=str(home / "incremental"), incremental="true", **common)
    batch = ScoreParams(input=new, output=str(home / "batch"), batch_id="bench", **common)
    first, summary = _timed(lambda: jobs.run_batch_scoring(spark, incremental, home=home))
    assert summary["rows_in"] == rows, summary
    seconds: dict[str, list[float]] = {"incremental": [], "batch": []}
    for _ in range(reps):
        spark.read.format("delta").load(new).drop("Y").write.format("delta").mode("append").save(str(table))
        took, summary = _timed(lambda: jobs.run_batch_scoring(spark, incremental, home=home))
        assert summary["rows_in"] == new_rows, summary
        seconds["incremental"].append(took)
        took, summary = _timed(lambda: jobs.run_batch_scoring(spark, batch, home=home))
        assert summary["rows_in"] == new_rows, summary
        seconds["batch"].append(took)
    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    return {
        "rows": rows,
        "new_rows": new_rows,
        "first_incremental_run_seconds": first,
        "seconds": seconds,
        "median": medians,
        "ratio": medians["incremental"] / medians["batch"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.incremental", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows already in the input")
    parser.add_argument("--new-rows", type=int, default=1_000_000, help="rows each incremental run finds")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from diabetes_spark.session import get_spark

    spark = get_spark("bench-incremental")
    home = OUT / "incremental-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    with MlflowLocation.local(home).active():
        jobs.run_training(spark, TrainParams(training_data="sample:diabetes.csv", model_name=MODEL), home=home)
        results = measure(spark, args.rows, args.new_rows, args.reps, home)
    (OUT / "incremental.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
