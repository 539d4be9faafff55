"""The scale benchmark's results as tables, a plot (time and peak memory against rows, Spark and
pandas) and a section of ``BENCHMARKS.md`` between two markers, replaced on each run and kept by
``make bench`` (it lies after the analysis marker of :mod:`benchmarks.report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.report import ANALYSIS_MARKER, ROOT, machine, replace_section

__all__ = ["ROOT", "machine", "table", "write"]

BEGIN, END = "<!-- scale: begin -->", "<!-- scale: end -->"
PLOT = ROOT / "benchmarks" / "scale_vs_rows.png"
LABELS = {
    "spark_score": "Spark: diabetes-spark score, under the cap",
    "pandas_capped": "pandas + scikit-learn, under the cap",
    "pandas_free": "pandas + scikit-learn, no cap",
    "spark_train": "Spark: diabetes-spark train (default linear), under the cap",
}


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def _ending(run: dict[str, Any]) -> str:
    if run["exit"] == 0:
        return "completed"
    if run["exit"] is None:
        return "stopped by the benchmark (timeout)"
    if run["killed"]:
        return f"killed by the kernel at the cap (SIGKILL, exit 137; OOM kills: {run['oom_kills']})"
    if run.get("java_out_of_memory") or (run["memory_error"] and run["kind"].startswith("spark")):
        return f"the JVM's heap ran out (java.lang.OutOfMemoryError), exit {run['exit']}"
    if run["memory_error"]:
        return "MemoryError"
    return f"failed, exit {run['exit']}: {(run['stderr_tail'] or [''])[-1][:300]}"


def table(results: dict[str, Any]) -> str:
    """One Markdown row per run (the sample model's training left out)."""
    lines = [
        "| rows | run | how it ended | wall | cgroup peak (page cache included) | peak anonymous + mapped | rows written |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["kind"] not in LABELS:
            continue
        written = f"{r['rows_written']:,}" if "rows_written" in r else "—"
        lines.append(
            f"| {r['n']:,} | {LABELS[r['kind']]} | {_ending(r)} | {r['wall']:.0f} s | {_gib(r['peak'])} "
            f"| {_gib(r['peak_anon'])} | {written} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Time and peak (anonymous + mapped) memory against rows, log-log; a run that did not complete
    is an ``x`` at its time of death and its peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for kind, label in LABELS.items():
        runs = sorted((r for r in results["runs"] if r["kind"] == kind), key=lambda r: r["n"])
        if not runs:
            continue
        line = left.plot([r["n"] for r in runs], [r["wall"] for r in runs], marker="o", label=label)[0]
        right.plot([r["n"] for r in runs], [r["peak_anon"] / 2**30 for r in runs], marker="o", color=line.get_color())
        for r in runs:
            if r["exit"] != 0:
                left.plot(r["n"], r["wall"], "x", markersize=14, color="red")
                right.plot(r["n"], r["peak_anon"] / 2**30, "x", markersize=14, color="red")
    right.axhline(results["cap"] / 2**30, linestyle="--", color="grey", label="the cap")
    left.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds (wall)", title="time vs rows")
    right.set(xscale="log", yscale="log", xlabel="rows", ylabel="GiB", title="peak memory (anonymous + mapped) vs rows")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("red x: did not complete (killed at the cap, out of heap, or stopped)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _settings(results: dict[str, Any]) -> str:
    spark = [r for r in results["runs"] if r["kind"] == "spark_score" and r["spark"]]
    if not spark:
        return "not recorded"
    s = spark[-1]["spark"]
    return ", ".join(f"`{k}={v}`" for k, v in s.items() if k.startswith("spark."))


def section(results: dict[str, Any]) -> str:
    """The Markdown of the section, markers included."""
    generated = ", ".join(f"{int(n):,} rows {s:.0f} s" for n, s in results.get("generate_seconds", {}).items())
    shared = (
        " The machine ran other work (other test suites and benchmarks) during this run, so times are "
        "upper bounds; the memory figures do not depend on it."
        if results.get("shared_machine")
        else ""
    )
    return (
        f"{BEGIN}\n## Scale: 1e6 to 1e8 rows under a memory cap\n\n"
        f"The cap: {_gib(results['cap'])}, for every capped run. Machine: {results['machine']}.{shared}\n\nCommand: `make bench-scale` (`{results['command']}`); raw "
        "numbers in `benchmarks/out/scale/results.json`.\n\n"
        "Each run is a fresh process in a memory cgroup of its own (cgroup v1 `memory.limit_in_bytes`, or v2 "
        "`memory.max`, with swap capped alike), which holds the whole process tree: Python and the Spark JVM. "
        "The benchmark creates it, moves the command into it before exec, and removes it after. Under the cap the "
        "kernel kills the largest process when the tree's memory cannot be reclaimed. *cgroup peak* is the "
        "cgroup's own high-water mark (`memory.max_usage_in_bytes` / `memory.peak`); it counts page cache, so it "
        "reaches the cap whenever a run reads or writes more data than the cap, and is an upper bound. "
        "*Peak anonymous + mapped* is the largest `total_rss + total_mapped_file` (v2: `anon + file_mapped`) of "
        "the cgroup's `memory.stat`, sampled every 0.2 s: the memory the kernel cannot drop, which is what a cap "
        "has to hold. Spark runs with default settings (no `DIABETES_SPARK_DRIVER_MEMORY`): the driver is sized "
        f"from the cgroup's limit. The Spark JVM was started with {_settings(results)}.\n\n"
        f"Data: generated with Spark (`benchmarks/data.py`: the sample resampled with noise, ~1% empty values, an "
        f"id column) as one Delta table per N ({generated}); pandas reads the same table's folder with "
        "`pd.read_parquet` (Delta's log folder is skipped by pyarrow), the Spark job reads it as Delta.\n\n"
        f"{table(results)}\n\n![time and peak memory vs rows](benchmarks/scale_vs_rows.png)\n{END}"
    )


def write(results: dict[str, Any], out: Path) -> None:
    """``out/results.json``, the plot, and the section of ``BENCHMARKS.md`` (replaced, or appended)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, PLOT)
    target = ROOT / "BENCHMARKS.md"
    text = target.read_text() if target.exists() else f"# Benchmarks\n\n{ANALYSIS_MARKER}\n"
    if ANALYSIS_MARKER not in text:
        text += f"\n{ANALYSIS_MARKER}\n"
    target.write_text(text)
    replace_section(section(results), BEGIN, END, target)
