"""``python -m benchmarks.demo [--reps 3]``: ``diabetes-spark demo`` in a fresh process, step by step.

What a newcomer waits for after the first start: the jars are installed and the JVM cache (class-data
archive, jar list) recorded by a first local command (:func:`benchmarks.run._record_jvm_cache`), then
each run is ``python -m diabetes_spark demo --json`` in a new process, timed end to end (interpreter
start to exit). Runs alternate between a new workspace (``DIABETES_SPARK_HOME`` empty: MLflow creates
its store) and an existing one (the same folder each time, as a rerun of ``make run``). The step
times are the console's step lines (``ingest: write 442 rows ... 4.5 s``); ``before_first_step`` is
interpreter start, imports and the Spark session's start. Beside them, the cold floor of
:mod:`benchmarks.run` (the samples' reads and writes alone, fresh process) in a session set as the
demo's. Medians of the repetitions. It prints its table; with ``--write`` the table replaces the
section of ``BENCHMARKS.md`` between its own markers, after the cold-start analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from benchmarks import run
from benchmarks.report import replace_section
from benchmarks.run import OUT, _record_jvm_cache

BEGIN, END = "<!-- demo: begin -->", "<!-- demo: end -->"
TARGET = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
#: A step's end line on stderr: ``train: register ... 7.0 s`` (rows, when counted, before the dots).
_STEP = re.compile(r"^(ingest|train|score): (\w+)(?: [\d,]+ rows)? \.\.\. ([\d.]+) s$")
_STARTS = re.compile(r"^(ingest|train|score): (\w+) \.\.\.$")


def demo_once(home: Path) -> dict[str, float]:
    """One ``diabetes-spark demo`` in a fresh process: wall seconds and each step's seconds, and the time
    before the first step (interpreter start, imports, Spark session start) and after the last one."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "DIABETES_SPARK_HOME": str(home)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "diabetes_spark", "demo", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    seen: dict[str, float] = {}
    first = last = None
    for line in process.stderr:
        now = time.perf_counter() - start
        if first is None and _STARTS.match(line.strip()):
            first = now
        step = _STEP.match(line.strip())
        if step:
            key = f"{step[1]}.{step[2]}"
            seen[key] = seen.get(key, 0.0) + float(step[3])
            last = now
    if process.wait() != 0:
        raise RuntimeError(f"diabetes-spark demo exited with {process.returncode}")
    wall = time.perf_counter() - start
    return {"wall": wall, "before_first_step": first or 0.0, "after_last_step": wall - (last or wall), **seen}


#: The cold floor of :mod:`benchmarks.run` (the samples' reads and writes alone, in a fresh process) in a
#: session set as the demo's (``session.small_input``).
_SMALL_FLOOR = (
    run._COLD_TIMER
    + run._COLD_SESSION.replace(
        "s=get_spark();", "from diabetes_spark.session import small_input; s=get_spark(conf=small_input({}));"
    )
    + run._COLD_IO
)


def floor_once(home: Path) -> dict[str, float]:
    """The cold floor in a demo's session: ``session_start``, its two halves and ``wall``."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "DIABETES_SPARK_HOME": str(home)}
    shutil.rmtree(home, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _SMALL_FLOOR, str(home)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the cold floor exited with {done.returncode}: {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - start}


def measure(reps: int, root: Path) -> dict[str, dict[str, float]]:
    """Medians over ``reps`` runs in a new and in an existing workspace and of the cold floor, alternating."""
    shutil.rmtree(root, ignore_errors=True)
    _record_jvm_cache(root / "first-run")
    demo_once(root / "existing")  # the existing workspace's first run (its store and tables)
    runs: dict[str, list[dict[str, float]]] = {"new workspace": [], "existing workspace": [], "cold floor": []}
    for rep in range(reps):
        runs["new workspace"].append(demo_once(root / f"new-{rep}"))
        runs["existing workspace"].append(demo_once(root / "existing"))
        runs["cold floor"].append(floor_once(root / "floor"))
    return {name: {key: median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}


def section(results: dict[str, dict[str, float]], command: str) -> str:
    """The Markdown section; ``other`` is the wall less every other row (MLflow runs opened and closed,
    notebooks parsed, between the steps), from the medians."""
    results = {
        name: {**r, "other": 2 * r["wall"] - sum(r.values())} if "ingest.read" in r else r
        for name, r in results.items()
    }
    keys = list(dict.fromkeys(key for r in results.values() for key in r))
    lines = [
        BEGIN,
        "## The demo after the first start",
        "",
        f"Command: `{command}` (medians; each run a fresh process; steps from the console's step lines).",
        "",
        "| seconds | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
        *(f"| {key} | " + " | ".join(_cell(r.get(key)) for r in results.values()) + " |" for key in keys),
        "",
        END,
    ]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="runs per workspace kind")
    parser.add_argument(
        "--write", action="store_true", help="replace the section of BENCHMARKS.md (its before/after table too)"
    )
    args = parser.parse_args()
    results = measure(args.reps, OUT / "demo-home")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "demo.json").write_text(json.dumps(results, indent=2))
    text = section(results, ("python -m benchmarks.demo " + " ".join(sys.argv[1:])).strip())
    if args.write:
        replace_section(text, BEGIN, END, TARGET)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
