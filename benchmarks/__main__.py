"""``python -m benchmarks [--sizes 100000,1000000,10000000] [--reps 3] ...``"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import report, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated row counts")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    parser.add_argument("--train-reps", type=int, default=1, help="repetitions of training")
    parser.add_argument("--pandas-max", type=int, default=10_000_000, help="largest N for pandas + scikit-learn")
    parser.add_argument("--udf-max", type=int, default=1_000_000, help="largest N for mlflow.pyfunc.spark_udf")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    command = ("python -m benchmarks " + " ".join(sys.argv[1:])).strip()
    results = run.run(
        sizes,
        reps=args.reps,
        train_reps=args.train_reps,
        pandas_max=args.pandas_max,
        udf_max=args.udf_max,
        on_size=lambda partial: report.write(partial, command, run.OUT),
    )
    print(report.write(results, command, run.OUT))
    print(json.dumps({"ratios": results["ratios"], "cold_start_seconds": results["cold_start_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
