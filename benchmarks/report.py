"""Turn benchmark results into a table, a JSON file, a log-log plot and BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS_MARKER = "<!-- analysis: kept across runs -->"


def machine() -> str:
    """One line describing the machine and the versions measured."""
    import mlflow
    import psutil
    import pyspark

    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.system()}, "
        f"Python {platform.python_version()}, pyspark {pyspark.__version__}, mlflow {mlflow.__version__}, local[*] Spark"
    )


def table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per N, median (min-max) seconds per measurement, and the ratios."""
    names = ["io_floor", "scoring", "training", "pandas_sklearn", "spark_udf", "io_floor_scoring_layout"]
    ratio_names = ("scoring/io_floor", "pandas/scoring", "spark_udf/scoring", "scoring/io_floor_scoring_layout")
    rows = {}
    for s in results["series"]:
        rows.setdefault(s["n"], {})[s["name"]] = f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
    head = (
        "| rows | "
        + " | ".join(f"{n} s" for n in names)
        + " | "
        + " | ".join(k.replace("/", " / ") for k in ratio_names)
        + " | Spark jobs per scoring run | per training run |"
    )
    lines = [head, "|" + "---|" * (len(names) + len(ratio_names) + 3)]
    for n in sorted(rows):
        r = results["ratios"][str(n)]
        ratios = [f"{r[k]:.2f}" if k in r else "—" for k in ratio_names]
        cells = [rows[n].get(name, "—") for name in names]
        lines.append(
            f"| {n:,} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratios)
            + f" | {results['jobs_per_scoring_run'][str(n)]} | {results['jobs_per_training_run'][str(n)]} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Time vs N, log-log, one line per measurement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    by_name: dict[str, list[tuple[int, float]]] = {}
    for s in results["series"]:
        by_name.setdefault(s["name"], []).append((s["n"], s["median"]))
    for name, points in sorted(by_name.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds (median)", title="diabetes-spark: time vs rows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write(results: dict[str, Any], command: str, out: Path) -> str:
    """Write ``out/results.json``, ``benchmarks/time_vs_rows.png`` and ``BENCHMARKS.md``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, ROOT / "benchmarks" / "time_vs_rows.png")
    text = table(results)
    memory = "\n".join(
        f"| {int(n):,} | {m['driver_python'] / 2**20:.0f} MiB | {m['jvm'] / 2**20:.0f} MiB |"
        for n, m in results["peak_memory_bytes"].items()
    )
    cold = results["cold_start_seconds"]
    target = ROOT / "BENCHMARKS.md"
    analysis = ""
    if target.exists() and ANALYSIS_MARKER in target.read_text():
        analysis = target.read_text().split(ANALYSIS_MARKER, 1)[1]
    target.write_text(
        "# Benchmarks\n\n"
        f"Machine: {machine()}.\n\nCommand: `{command}` (median of {results['reps']} repetitions, "
        f"{results['train_reps']} for training; min-max in brackets; one Spark session; data generated once "
        "and cached under `benchmarks/out/data`).\n\n"
        f"{text}\n\n"
        "Peak resident memory while measuring each N:\n\n| rows | driver (Python) | Spark JVM |\n|---|---|---|\n"
        f"{memory}\n\n"
        "Cold start, train + score on the 442-row sample in a fresh process (Python imports, Spark session "
        "start, the first jobs of a cold JVM), once a first local run has installed the jars and recorded "
        "the JVM cache (class-data archive, resolved jar list); without that cache; and the cold floor: "
        "the same reads and writes of the two samples alone, in a fresh process "
        "(the training and scoring columns hold its two halves):\n\n"
        "| run | wall | session start | training | scoring | wall / cold floor |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {name.replace('_', ' ')} | {c['wall']:.1f} s | {c['session_start']:.1f} s | {c['train']:.1f} s "
            f"| {c['score']:.1f} s | {c['wall'] / cold['io_floor']['wall']:.2f} |\n"
            for name, c in cold.items()
        )
        + "\nPlot: `benchmarks/time_vs_rows.png`; raw numbers: `benchmarks/out/results.json`.\n\n"
        "![time vs rows](benchmarks/time_vs_rows.png)\n\n"
        f"{ANALYSIS_MARKER}{analysis}"
    )
    return text


def replace_section(text: str, begin: str, end: str, target: Path | None = None) -> None:
    """Put ``text`` (which opens with ``begin`` and closes with ``end``) in ``target`` (default
    ``BENCHMARKS.md``) in place of the text between those markers, or at the end when they are absent."""
    target = target or ROOT / "BENCHMARKS.md"
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + text + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    target.write_text(current, encoding="utf-8")
