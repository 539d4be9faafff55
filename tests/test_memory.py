"""The local driver sized to the memory the process may use: the rule, and scoring that completes
in a fresh process under a small memory cgroup with default settings.

The cgroup tests need to create a memory cgroup (root, or a delegated hierarchy). Where the system
refuses it they are skipped, with the refusal as the reason; once one is created, every check holds.
A JVM killed during a job, under a cgroup too, is in ``tests/test_misuse.py``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark.session import DRIVER_CEILING, DRIVER_FLOOR, driver_memory
from tests.cgroup import memory_cgroup, refusal

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (None, "4096m"),  # unknown: the ceiling
        (24 * GIB, "4096m"),  # a workstation: the ceiling
        (6 * GIB, "3840m"),  # (6 - 1) * 3/4 GiB
        (3 * GIB, "1536m"),
        (2 * GIB, "768m"),
        (GIB + GIB // 2, "512m"),  # 384m by the rule: the floor
        (512 << 20, "512m"),
    ],
)
def test_the_driver_leaves_room_for_python_and_the_jvm_off_heap(limit: int | None, expected: str) -> None:
    assert driver_memory(limit) == expected
    assert DRIVER_FLOOR >> 20 <= int(expected[:-1]) <= DRIVER_CEILING >> 20


#: Rows scored under the cap: enough that the JVM's heap grows past the cap if it may (a 4g driver).
ROWS = 1_000_000
CAP = 2 * GIB


@pytest.mark.slow
def test_scoring_under_a_small_memory_cgroup_completes_with_default_settings(
    spark, trained: dict, mlflow_home: Path, tmp_path: Path
) -> None:
    """A fresh ``diabetes-spark score`` of a million rows in a 2 GiB cgroup, no memory setting given:
    the JVM starts with the heap the rule gives for the cgroup's limit, and every row is written."""
    reason = refusal()
    if reason:
        pytest.skip(reason)
    source = tmp_path / "input"
    features = {c: F.round(F.rand(i) * 100, 2) for i, c in enumerate(["AGE", "BMI", "BP", "S1", "S2", "S3", "S4"])}
    features |= {c: F.round(F.rand(10 + i) * 5, 3) for i, c in enumerate(["S5", "S6"])}
    rows = spark.range(ROWS).select(
        F.format_string("P%08d", "id").alias("patient_id"),
        *[v.alias(k) for k, v in features.items()],
        F.when(F.col("id") % 2 == 0, "M").otherwise("F").alias("SEX"),
    )
    rows.write.format("delta").save(str(source))
    output = tmp_path / "scored"
    argv = [sys.executable, "-m", "diabetes_spark", "score", "--quiet", "--json", "--input", str(source)]
    argv += ["--output", str(output), "--model-name", TRAINED_MODEL, "--batch-id", "capped"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DIABETES_SPARK_"))}
    env |= {"PYTHONPATH": str(ROOT), "DIABETES_SPARK_HOME": str(mlflow_home), "DIABETES_SPARK_JVM_CACHE": "off"}
    java: list[str] = []
    with memory_cgroup(CAP) as group:
        done_event = threading.Event()

        def watch() -> None:
            while not done_event.is_set() and not java:
                java.extend(group.java_argv())
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            done = group.run(argv, timeout=600, env=env, cwd=tmp_path)
        finally:
            done_event.set()
            watcher.join()
        kills = group.oom_kills()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_rejected"]) == (ROWS, ROWS, 0)
    assert f"-Xmx{driver_memory(CAP)}" in java, [a for a in java if a.startswith("-X")]
    assert kills == 0
    written = spark.read.format("delta").load(str(output))
    assert written.where(F.col("prediction").isNull()).count() == 0
    assert written.select("batch_id").distinct().collect()[0][0] == "capped"
    assert written.select("patient_id").distinct().count() == written.count() == ROWS
