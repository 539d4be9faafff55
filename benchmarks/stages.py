"""Where scoring's time goes against the plain I/O floor, from Spark's own event log.

One session with Spark's event log on; one N-row table (``benchmarks.data``); a model trained on
1e5 rows (the scoring path does not depend on the training size). After a warm-up of each, the
floor and scoring alternate ``--reps`` times, each in its own job group. The event log then gives,
for each run, every Spark job: the Python line that started it (PySpark's call site), its wall
time, and its stages' task time; what is left of the run's wall time is the driver's own (plans,
Delta's log and commit, MLflow). Printed as a table, written to ``benchmarks/out/stages.json``.

    python -m benchmarks.stages --rows 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.data import generate
from benchmarks.run import OUT, io_floor

_MS = 1000.0


def _session(events: Path) -> Any:
    from diabetes_spark.session import get_spark

    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    conf = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }
    return get_spark("diabetes-spark-stages", conf=conf)


def _runs(events: Path) -> dict[str, dict[str, Any]]:
    """Per job group: its jobs, each with call site, wall seconds and task seconds (run, CPU)."""
    jobs: dict[int, dict[str, Any]] = {}
    stage_job: dict[int, int] = {}
    for log in (p for p in events.rglob("*") if p.is_file() and not p.name.startswith("appstatus")):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                props = event.get("Properties") or {}
                job = {
                    "group": props.get("spark.jobGroup.id"),
                    "site": _site(props, event),
                    "start": event["Submission Time"],
                    "end": event["Submission Time"],
                    "tasks": 0,
                    "run_s": 0.0,
                    "cpu_s": 0.0,
                }
                jobs[event["Job ID"]] = job
                for stage in event["Stage IDs"]:
                    stage_job[stage] = event["Job ID"]
            elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
                jobs[event["Job ID"]]["end"] = event["Completion Time"]
            elif kind == "SparkListenerTaskEnd" and event.get("Stage ID") in stage_job:
                job = jobs[stage_job[event["Stage ID"]]]
                metrics = event.get("Task Metrics") or {}
                job["tasks"] += 1
                job["run_s"] += metrics.get("Executor Run Time", 0) / _MS
                job["cpu_s"] += metrics.get("Executor CPU Time", 0) / 1e9
    runs: dict[str, dict[str, Any]] = defaultdict(lambda: {"jobs": []})
    for job in jobs.values():
        if job["group"]:
            job["wall_s"] = (job["end"] - job["start"]) / _MS
            runs[job["group"]]["jobs"].append(job)
    return runs


def _site(props: dict[str, str], event: dict[str, Any]) -> str:
    """What started a job: Delta's description of its own work, else PySpark's call site, else the
    name of the job's last stage."""
    description = props.get("spark.job.description") or ""
    site = props.get("callSite.short") or ""
    stages = event.get("Stage Infos") or [{}]
    name = max(stages, key=lambda s: s.get("Stage ID", 0)).get("Stage Name", "?")
    if description and not description.startswith(("floor-", "scoring-")):
        return f"{description[:90]} | {site or name}"
    return site or name


def measure(rows: int, reps: int, out: Path = OUT) -> dict[str, Any]:
    """Alternate floor and scoring at ``rows``; return each run's wall time and its Spark jobs."""
    from diabetes_spark import jobs
    from diabetes_spark.params import ScoreParams, TrainParams

    events = out / "events"
    spark = _session(events)
    sc = spark.sparkContext
    home = out / "stages-home"
    shutil.rmtree(home, ignore_errors=True)
    work = out / "work" / f"stages-n={rows}"
    shutil.rmtree(work, ignore_errors=True)
    data = generate(spark, rows, out / "data", parquet=False)["delta"]
    small = generate(spark, 100_000, out / "data", parquet=False)["delta"]
    trained = TrainParams(training_data=small, experiment="stages", model_name="stages", max_reject_fraction=1.0)
    jobs.run_training(spark, trained, home=home)
    params = ScoreParams(
        input=data,
        output=str(work / "scored"),
        model_name="stages",
        batch_id="bench",
        experiment="stages",
        max_reject_fraction=1.0,
    )
    runs_: dict[str, Any] = {"floor": [], "scoring": []}
    plan = [
        ("floor", lambda: io_floor(spark, data, str(work / "floor"))),
        ("scoring", lambda: jobs.run_batch_scoring(spark, params, home=home)),
    ]
    for _, fn in plan:  # warm-up: creates each table
        fn()
    for rep in range(reps):
        for label, fn in plan:
            group = f"{label}-{rep}"
            sc.setJobGroup(group, "")
            start = time.perf_counter()
            fn()
            runs_[label].append({"group": group, "wall_s": time.perf_counter() - start})
            sc.setLocalProperty("spark.jobGroup.id", None)
    spark.stop()  # flushes the event log
    found = _runs(events)
    for label in runs_:
        for run in runs_[label]:
            run["jobs"] = sorted(found[run["group"]]["jobs"], key=lambda j: j["start"])
    return {"rows": rows, "reps": reps, "runs": runs_}


def summarize(result: dict[str, Any]) -> list[str]:
    """Median over runs of each call site's wall and task seconds, per kind of run."""
    lines = [f"rows={result['rows']:,}, median of {result['reps']} alternating runs"]
    for label, runs in result["runs"].items():
        walls = [r["wall_s"] for r in runs]
        job_walls = [sum(j["wall_s"] for j in r["jobs"]) for r in runs]
        lines.append(
            f"{label}: wall {statistics.median(walls):.2f} s, in Spark jobs {statistics.median(job_walls):.2f} s, "
            f"driver only {statistics.median(w - j for w, j in zip(walls, job_walls)):.2f} s, "
            f"jobs per run {statistics.median(len(r['jobs']) for r in runs):.0f}"
        )
        per_site: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in runs])
        for i, run in enumerate(runs):
            for job in run["jobs"]:
                site = job["site"].replace(str(Path.cwd()) + "/", "")
                per_site[site][i].append(job["wall_s"])
        for site, per_run in sorted(per_site.items(), key=lambda kv: -statistics.median(map(sum, kv[1]))):
            lines.append(f"  {statistics.median(map(sum, per_run)):7.2f} s  x{max(map(len, per_run))}  {site}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.rows, args.reps)
    (OUT / f"stages-{args.rows}.json").write_text(json.dumps(result, indent=1))
    print("\n".join(summarize(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
