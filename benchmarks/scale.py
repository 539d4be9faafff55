"""``python -m benchmarks.scale [--sizes 1e6,1e7,2e7,1e8] [--cap-gib 3] ...`` (``make bench-scale``).

Spark against pandas + scikit-learn where memory runs out: N rows generated as a Delta table with
Spark, then each command run in a fresh memory cgroup (``tests/cgroup.py``) that holds its whole
process tree, JVM included, and is removed after it:

- ``diabetes-spark score`` of the table with default settings, under the cap;
- pandas + scikit-learn scoring of the same table as a pandas user would write it (``pd.read_parquet``
  of the table's folder, ``predict``, ``to_parquet``), under the same cap, and without a cap while
  it fits the machine, to measure what it needs;
- ``diabetes-spark train`` of the default linear pipeline on the largest N, under the cap.

For each: exit, wall time, the cgroup's peak (page cache included) and the sampled peak of what it
cannot drop (anonymous and mapped memory), and the Spark settings its JVM was started with. Results go
to ``benchmarks/out/scale/results.json`` after every step, and :mod:`benchmarks.scale_report` writes
``BENCHMARKS.md``'s section and ``benchmarks/scale_vs_rows.png``; the generated data is deleted at
the end unless ``--keep-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import scale_report
from benchmarks.run import OUT
from tests.cgroup import memory_cgroup

SCALE = OUT / "scale"
FEATURES = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
SAMPLE = Path(__file__).resolve().parent.parent / "diabetes_spark" / "data" / "diabetes.csv"
MODEL, EXPERIMENT = "scale_bench", "scale-bench"


def generate(n: int, folder: Path) -> str:
    """The N-row Delta table (:func:`benchmarks.data.generate`), written by a Spark of its own."""
    from benchmarks.data import generate as write
    from diabetes_spark.session import get_spark

    spark = get_spark("diabetes-spark-scale-data")
    return write(spark, n, folder, parquet=False)["delta"]


def pandas_score(source: str, target: str) -> None:
    """Scoring as a pandas user writes it: a Ridge pipeline fitted on the sample (imputation, one-hot
    of SEX, the same features), the Delta table's folder read with ``pd.read_parquet``."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    sample = pd.read_csv(SAMPLE, dtype=str)
    numeric = [c for c in FEATURES if c != "SEX"]
    for c in [*numeric, "Y"]:
        sample[c] = pd.to_numeric(sample[c], errors="coerce")
    sample = sample.dropna(subset=["Y"])
    model = make_pipeline(
        make_column_transformer(
            (SimpleImputer(strategy="mean"), numeric), (OneHotEncoder(handle_unknown="ignore"), ["SEX"])
        ),
        Ridge(alpha=1.0),
    ).fit(sample[FEATURES], sample["Y"])
    df = pd.read_parquet(source)
    df["prediction"] = model.predict(df[FEATURES])
    df.to_parquet(target, index=False)
    print(json.dumps({"rows_written": len(df)}))


def jvm_settings(argv: list[str]) -> dict[str, str]:
    """The heap and the Spark settings a JVM was started with, from its command line."""
    settings = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("spark.") and "=" in a}
    heap = next((a[4:] for a in argv if a.startswith("-Xmx")), "")
    keep = ("spark.driver.memory", "spark.sql.shuffle.partitions", "spark.master")
    return {"-Xmx": heap, **{k: settings[k] for k in keep if k in settings}} if argv else {}


def measured(argv: list[str], cap: int | None, *, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``argv`` run in a fresh cgroup capped at ``cap`` bytes: how it ended and what it used."""
    found: dict[str, str] = {}
    with memory_cgroup(cap, name="diabetes-spark-bench") as group, group.sampling():
        done = threading.Event()

        def watch() -> None:  # the JVM's own command line, once it has started
            while not done.is_set() and not found:
                found.update(jvm_settings(group.java_argv()))
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        began = time.perf_counter()
        try:
            result = group.run(argv, timeout=timeout, env={**os.environ, **(env or {})}, cwd=SCALE)
            code, out, err = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired:
            code, out, err = None, "", f"stopped by the benchmark after {timeout:.0f} s"
        wall = time.perf_counter() - began
        done.set()
        watcher.join()
        peak, kills = group.peak(), group.oom_kills()
    lines = [line for line in err.splitlines() if line.strip()]
    return {
        "exit": code,
        "killed": code == -9,
        "memory_error": "MemoryError" in err and "OutOfMemoryError" not in err,
        "java_out_of_memory": "OutOfMemoryError" in err,
        "oom_kills": kills,
        "wall": wall,
        "cap": cap,
        "peak": peak,
        "peak_anon": group.peak_anon,
        "peak_rss": group.peak_rss,
        "spark": found,
        "summary": _last_json(out),
        "stderr_tail": lines[-3:],
    }


def _last_json(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except json.JSONDecodeError:
                continue
    return {}


def delta_rows(table: Path) -> int:
    """Rows in the Delta table's live files, from the ``numRecords`` its log records (no Spark)."""
    live: dict[str, int] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = json.loads(action["add"]["stats"])["numRecords"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return sum(live.values())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diabetes_spark", *args, "--json", "--quiet"]


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.scale", *args]


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every measurement, written out after each; returns the results."""
    cap = int(args.cap_gib * 2**30)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    env = {"DIABETES_SPARK_HOME": str(SCALE / "home"), "MLFLOW_TRACKING_URI": "", "MLFLOW_REGISTRY_URI": ""}
    env = {**env, "PYTHONPATH": str(scale_report.ROOT), "DIABETES_SPARK_DRIVER_MEMORY": ""}
    shutil.rmtree(SCALE / "home", ignore_errors=True)
    shutil.rmtree(SCALE / "work", ignore_errors=True)
    (SCALE / "work").mkdir(parents=True)
    results: dict[str, Any] = {"cap": cap, "command": command, "machine": scale_report.machine(), "runs": []}
    results["shared_machine"] = args.shared

    def record(kind: str, n: int, outcome: dict[str, Any]) -> None:
        results["runs"].append({"kind": kind, "n": n, **outcome})
        print(json.dumps({"kind": kind, "n": n, **{k: outcome[k] for k in ("exit", "wall", "peak", "peak_anon")}}))
        scale_report.write(results, SCALE)

    tables = {}
    for n in sizes:
        began = time.perf_counter()
        done = subprocess.run(_python("--generate", str(n)), env={**os.environ, **env}, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"generating {n} rows failed: {done.stderr[-2000:]}")
        tables[n] = _last_json(done.stdout)["delta"]
        results.setdefault("generate_seconds", {})[str(n)] = time.perf_counter() - began
    record(
        "train_sample",
        442,
        measured(
            _cli("train", "--training-data", "sample:diabetes.csv", "--model-name", MODEL, "--experiment", EXPERIMENT),
            None,
            timeout=1800,
            env=env,
        ),
    )
    for n in sizes:
        output = SCALE / "work" / f"scored-{n}"
        outcome = measured(
            _cli(
                "score",
                "--input",
                tables[n],
                "--output",
                str(output),
                "--model-name",
                MODEL,
                "--experiment",
                EXPERIMENT,
                "--batch-id",
                "scale",
            ),
            cap,
            timeout=args.timeout,
            env=env,
        )
        outcome["rows_written"] = delta_rows(output) if (output / "_delta_log").exists() else 0
        record("spark_score", n, outcome)
        shutil.rmtree(output, ignore_errors=True)
        target = str(SCALE / "work" / f"pandas-{n}.parquet")
        for kind, limit in (("pandas_capped", cap), ("pandas_free", None)):
            if limit is None and n > args.pandas_free_max:
                continue
            outcome = measured(_python("--pandas", tables[n], target), limit, timeout=args.timeout, env=env)
            outcome["rows_written"] = outcome["summary"].get("rows_written", 0)
            record(kind, n, outcome)
            Path(target).unlink(missing_ok=True)
    for n in [int(float(s)) for s in args.train_sizes.split(",") if s]:
        outcome = measured(
            _cli("train", "--training-data", tables[n], "--model-name", f"{MODEL}_{n}", "--experiment", EXPERIMENT),
            cap,
            timeout=args.train_timeout,
            env=env,
        )
        record("spark_train", n, outcome)
    if not args.keep_data:
        shutil.rmtree(SCALE / "data", ignore_errors=True)
        shutil.rmtree(SCALE / "work", ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e6,1e7,2e7,1e8", help="comma-separated row counts")
    parser.add_argument("--cap-gib", type=float, default=3.0, help="the memory cap of every capped run, GiB")
    parser.add_argument("--train-sizes", default="1e8", help="row counts to train on under the cap ('' for none)")
    parser.add_argument("--pandas-free-max", type=float, default=1e7, help="largest N pandas runs without a cap")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a scoring run is stopped")
    parser.add_argument("--train-timeout", type=float, default=5400, help="seconds before training is stopped")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated tables")
    parser.add_argument("--shared", action="store_true", help="note that the machine ran other work meanwhile")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pandas", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps({"delta": generate(args.generate, SCALE / "data")}))
        return 0
    if args.pandas:
        pandas_score(*args.pandas)
        return 0
    results = run(args, ("python -m benchmarks.scale " + " ".join(sys.argv[1:])).strip())
    print(scale_report.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
