"""``python -m benchmarks.promotion``: shadow scoring against champion-only scoring, and validation
over a large held-out set with a small driver.

1. Shadow: two linear versions of one model (v1 champion, v2 challenger) score the same N-row Delta
   batch (:mod:`benchmarks.data`), alternately without and with ``shadow``, each into its own table
   with a fixed batch id (so every repetition replaces its batch); the ratio is of the medians, in
   one session.
2. Validation: N held-out rows (synthetic, written once as Delta) evaluated for the candidate and the
   champion, one Spark pass each, and judged (:func:`promotion.validate`), in a fresh process with
   ``spark.driver.memory`` as given, so that nothing the scoring runs held counts; the peak resident
   memory of that process and of its JVM is sampled from before the session starts.

    python -m benchmarks.promotion --rows 1000000 --validation-rows 10000000 --driver-memory 1g
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.data import generate
from benchmarks.run import OUT, PeakMemory
from diabetes_spark import evaluation, jobs, promotion, registry, schemas, scoring, storage, training
from diabetes_spark.params import ScoreParams, TrainParams
from diabetes_spark.registry import MlflowLocation

MODEL = "bench_promotion"


def _holdout(spark: Any, n: int, folder: Path) -> str:
    """N synthetic held-out rows (the features' and the label's ranges of the sample), as Delta, once."""
    from pyspark.sql import functions as F

    path = folder / f"holdout-n={n}"
    if (path / "_delta_log").exists():
        return str(path)
    columns = [F.round(F.rand(i) * 100 + 20, 4).alias(c) for i, c in enumerate(schemas.numeric_feature_names())]
    sex = F.when(F.rand(99) < 0.5, F.lit("M")).otherwise(F.lit("F")).alias("SEX")
    label = (F.rand(98) * 300 + 25).alias(schemas.LABEL)
    spark.range(n).select(*columns, sex, label).write.format("delta").mode("overwrite").save(str(path))
    return str(path)


def shadow_ratio(spark: Any, rows: int, reps: int, home: Path) -> dict[str, Any]:
    """Median seconds of champion-only and of shadow scoring at ``rows``, and their ratio."""
    source = generate(spark, rows, OUT / "data")["delta"]
    seconds: dict[str, list[float]] = {"champion_only": [], "shadow": []}
    summary: dict[str, Any] = {}
    for _ in range(reps):
        for mode, shadow in (("champion_only", "false"), ("shadow", "true")):
            params = ScoreParams(
                input=source,
                output=str(home / f"predictions_{mode}"),
                model_name=MODEL,
                batch_id="bench",
                experiment="bench-promotion-scoring",
                shadow=shadow,
            )
            start = time.perf_counter()
            summary = jobs.run_batch_scoring(spark, params, home=home)
            seconds[mode].append(time.perf_counter() - start)
    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    return {
        "rows": rows,
        "seconds": seconds,
        "median": medians,
        "ratio": medians["shadow"] / medians["champion_only"],
        "shadow": summary.get("shadow"),
    }


def validation_memory(rows: int, home: Path, driver_memory: str) -> dict[str, Any]:
    """Seconds and peak memory of validating a candidate against the champion on ``rows`` held-out
    rows, in a fresh process of its own (:func:`_validate_here`)."""
    argv = [sys.executable, "-m", "benchmarks.promotion", "--part", "validation", "--home", str(home)]
    argv += ["--validation-rows", str(rows), "--driver-memory", driver_memory]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _validate_here(rows: int, home: Path) -> dict[str, Any]:
    """:func:`validation_memory`'s own process: session start, then the validation, sampled."""
    from diabetes_spark.session import get_spark

    with PeakMemory() as peak, MlflowLocation.local(home).active():
        spark = get_spark("bench-validation")
        test = storage.read_table(spark, storage.resolve(_holdout(spark, rows, OUT / "data")))
        params = TrainParams(training_data="-", model_name=MODEL, validation_thresholds="rmse<=1000,r2>=-100")
        candidate = registry.resolve_version(MODEL, version="2")
        spec = registry.model_metadata(candidate)[scoring.LINEAR_SPEC]
        start = time.perf_counter()
        predictions = scoring.predict(test, None, compiled=scoring.spec_column(spec))
        metrics = evaluation.regression_metrics(predictions, label=schemas.LABEL, prediction=schemas.PREDICTION)
        result = training.TrainResult(model=None, metrics=metrics, train=test, test=test, predictions=predictions)  # type: ignore[arg-type]
        verdict = promotion.validate(params, result)
        seconds = time.perf_counter() - start
    return {
        "rows": rows,
        "seconds": seconds,
        "verdict": verdict.verdict,
        "judged_by": verdict.judged_by,
        "peak_python_mib": peak.driver / 2**20,
        "peak_jvm_mib": peak.jvm / 2**20,
        "driver_memory": spark.conf.get("spark.driver.memory"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.promotion", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the scored batch")
    parser.add_argument("--validation-rows", type=int, default=10_000_000, help="held-out rows validated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--driver-memory", default="1g", help="spark.driver.memory of the validation's driver")
    parser.add_argument("--part", choices=("all", "validation"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, default=OUT / "promotion-home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "validation":  # the fresh process of validation_memory
        os.environ["DIABETES_SPARK_DRIVER_MEMORY"] = args.driver_memory
        print(json.dumps(_validate_here(args.validation_rows, args.home)))
        return 0
    from diabetes_spark.session import get_spark

    spark = get_spark("bench-promotion")
    home = args.home
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    with MlflowLocation.local(home).active():
        base = TrainParams(training_data="sample:diabetes.csv", experiment="bench-promotion", model_name=MODEL)
        jobs.run_training(spark, base, home=home)
        jobs.run_training(spark, dataclasses.replace(base, reg_param=1.0), home=home)  # loses: the challenger
        _holdout(spark, args.validation_rows, OUT / "data")  # written here, read by the fresh process
        shadow = shadow_ratio(spark, args.rows, args.reps, home)
    spark.stop()  # the validation's process has the machine's memory to itself
    results = {"shadow": shadow, "validation": validation_memory(args.validation_rows, home, args.driver_memory)}
    (OUT / "promotion.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
