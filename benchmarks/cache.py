"""``python -m benchmarks.cache [--sizes 100000,1000000] [--reps 3]``: what dropping ``persist`` costs.

Over Spark Connect (serverless) nothing is cached: ingest and training pass over their input
several times (count, report, write; count, fit) and each pass recomputes it from the input read at
one pinned Delta version (``runtime.cached`` is a no-op there). This runs both jobs classically
with the cache and with ``cached`` replaced by that no-op, in one process, and reports the ratio
uncached / cached next to the plain Delta read + write of the same rows. The section it writes in
``BENCHMARKS.md`` lies between its own markers, after the kept analysis.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.data import generate
from benchmarks.report import replace_section
from benchmarks.run import OUT, io_floor
from diabetes_spark import jobs, training
from diabetes_spark.jobs import tables
from diabetes_spark.params import IngestParams, TrainParams

BEGIN, END = "<!-- cache: begin -->", "<!-- cache: end -->"
TARGET = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


@contextmanager
def _uncached(df: Any) -> Iterator[Any]:
    yield df


@contextmanager
def _without_cache() -> Iterator[None]:
    """The jobs as they run over Spark Connect: every pass recomputes from the pinned input."""
    saved = tables.cached, training.cached
    tables.cached = training.cached = _uncached
    try:
        yield
    finally:
        tables.cached, training.cached = saved


def _median_seconds(reps: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def measure(spark: Any, n: int, reps: int, out: Path) -> dict[str, float]:
    paths = generate(spark, n, out / "data")
    work = out / "cache-work" / f"n={n}"
    shutil.rmtree(work, ignore_errors=True)
    home = work / "home"
    result: dict[str, float] = {"rows": n}
    result["io_floor"] = _median_seconds(reps, lambda: io_floor(spark, paths["delta"], str(work / "floor")))
    for label, context in (("cached", nullcontext), ("uncached", _without_cache)):
        ingest = IngestParams(source=paths["delta"], table=str(work / label / "t"), max_reject_fraction=1.0)
        train = TrainParams(
            training_data=paths["delta"], experiment="cache", model_name=f"cache_{n}", max_reject_fraction=1.0
        )
        with context():
            result[f"ingest_{label}"] = _median_seconds(reps, lambda p=ingest: jobs.run_ingest(spark, p))
            result[f"training_{label}"] = _median_seconds(reps, lambda p=train: jobs.run_training(spark, p, home=home))
    for job in ("ingest", "training"):
        result[f"{job}_uncached_per_cached"] = result[f"{job}_uncached"] / result[f"{job}_cached"]
        result[f"{job}_uncached_per_io_floor"] = result[f"{job}_uncached"] / result["io_floor"]
    return result


def section(results: list[dict[str, float]], command: str) -> str:
    lines = [
        BEGIN,
        "## Without `persist` (as over Spark Connect)",
        "",
        f"Command: `{command}` (median of the repetitions; one classic Spark session; the same data as above).",
        "",
        (
            "| rows | io_floor s | ingest cached s | ingest uncached s | uncached / cached | training cached s "
            "| training uncached s | uncached / cached |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['io_floor']:.2f} | {r['ingest_cached']:.2f} | {r['ingest_uncached']:.2f} "
            f"| {r['ingest_uncached_per_cached']:.2f} | {r['training_cached']:.2f} | {r['training_uncached']:.2f} "
            f"| {r['training_uncached_per_cached']:.2f} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache", description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    args = parser.parse_args()
    from diabetes_spark.session import get_spark

    spark = get_spark("diabetes-spark-benchmarks")
    OUT.mkdir(parents=True, exist_ok=True)
    results = [measure(spark, int(float(n)), args.reps, OUT) for n in args.sizes.split(",")]
    (OUT / "cache.json").write_text(json.dumps(results, indent=2))
    command = ("python -m benchmarks.cache " + " ".join(sys.argv[1:])).strip()
    replace_section(section(results, command), BEGIN, END, TARGET)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
