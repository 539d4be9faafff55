"""The local driver sized to the memory the process may use: the rule, and scoring that completes
in a fresh process under a small memory cgroup with default settings, and a job that runs out of Java
heap reported as the configuration error it is (exit 2), from a real ``java.lang.OutOfMemoryError``.

The cgroup tests need to create a memory cgroup (root, or a delegated hierarchy). Where the system
refuses it they are skipped, with the refusal as the reason; once one is created, every check holds.
A JVM killed during a job, under a cgroup too, is in ``tests/test_misuse.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import TRAINED_MODEL
from diabetes_spark import cli
from diabetes_spark.errors import ConfigurationError, InputError
from diabetes_spark.jobs.recorder import recording
from diabetes_spark.jvm_errors import JvmMemoryError, out_of_memory
from diabetes_spark.session import DRIVER_CEILING, DRIVER_FLOOR, driver_memory
from diabetes_spark.telemetry import COMPONENT_SCORE
from tests.cgroup import memory_cgroup, refusal
from tests.test_misuse import _fresh, check_last_line, delta_versions

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


def _real_out_of_memory(spark) -> Exception:
    """A real ``java.lang.OutOfMemoryError`` from the suite's JVM, as py4j raises it: an array the VM
    refuses outright (larger than any heap may hold), so nothing is allocated and no GC runs."""
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Long.TYPE, 2**31 - 1)
    except Exception as e:
        return e
    raise AssertionError("the JVM allocated an array of 2**31 - 1 longs")


def test_a_real_jvm_out_of_memory_error_is_the_configuration_error_naming_the_heap(spark, monkeypatch) -> None:
    """Out of memory is told by the JVM class in py4j's exception chain, through the job's error as well;
    another JVM error is not."""
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    oom = _real_out_of_memory(spark)
    assert type(oom).__name__ == "Py4JJavaError"
    assert out_of_memory(oom) == "java.lang.OutOfMemoryError"
    try:
        raise InputError("cannot read the columns of csv input x") from oom
    except InputError as e:
        wrapped = e
    heap = spark.sparkContext.getConf().get("spark.driver.memory")
    for error in (oom, wrapped):
        line = str(cli._classified(error))
        assert isinstance(cli._classified(error), ConfigurationError)
        assert line.startswith(f"the Spark driver ran out of memory (a Java heap of {heap}, under a memory limit of ")
        assert "set DIABETES_SPARK_DRIVER_MEMORY higher within that limit" in line, line
        assert line.endswith("[java.lang.OutOfMemoryError]"), line
    try:
        spark.sparkContext._jvm.java.lang.Integer.parseInt("not a number")
    except Exception as e:
        other = e
    assert out_of_memory(other) == "" and cli._classified(other) is None


def test_a_job_out_of_memory_fails_with_the_line_the_command_line_prints(spark, monkeypatch) -> None:
    """The notebooks fail their run with the jobs' error: the recorder raises the same line."""
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    oom = _real_out_of_memory(spark)
    with pytest.raises(ConfigurationError) as raised, recording(None, COMPONENT_SCORE):
        raise oom
    assert raised.value.__cause__ is oom
    assert str(raised.value) == str(cli._classified(oom))


def test_a_rescore_batch_out_of_memory_ends_the_command_instead_of_listing_the_batch(spark, monkeypatch) -> None:
    """Rescore and replay list a batch whose input is gone and go on; a JVM out of memory is not that:
    it is the memory error, which ends the command, while any other read failure still lists the batch."""
    from diabetes_spark.jobs.rescore import _unreadable

    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    oom = _real_out_of_memory(spark)
    assert isinstance(_unreadable("input v3", oom), JvmMemoryError)
    assert str(_unreadable("input v3", oom)) == str(cli._classified(oom))
    try:
        spark.sparkContext._jvm.java.lang.Integer.parseInt("not a number")
    except Exception as e:
        gone = _unreadable("input v3", e)
    assert type(gone) is InputError and str(gone).startswith("input input v3 can no longer be read"), gone


def test_the_text_names_out_of_memory_only_where_no_field_carries_it() -> None:
    """Spark Connect keeps the server's JVM classes only in the message: the exact class name is read there."""
    from pyspark.errors.exceptions.connect import SparkException  # needs Spark Connect's client (grpc)

    aborted = "Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times: java.lang.OutOfMemoryError: Java heap space"
    assert out_of_memory(SparkException(message=aborted)) == "java.lang.OutOfMemoryError"
    assert out_of_memory(SparkException(message="Job aborted due to stage failure: out of disk space")) == ""


#: py4j, really, sending a command to a "JVM" that closes every connection unanswered, as a dead one does.
UNANSWERED = """
import socket, threading
from py4j.java_gateway import GatewayClient, GatewayParameters
from diabetes_spark import console
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
def close_each():
    while True:
        connection, _ = server.accept()
        connection.recv(1024)
        connection.close()
threading.Thread(target=close_each, daemon=True).start()
client = GatewayClient(gateway_parameters=GatewayParameters(port=server.getsockname()[1]))
with console.logging_for(True):
    print("answer", client.send_command("c\\nt\\ngetX\\ne\\n"))
"""


@pytest.mark.parametrize("debug", ["", "1"])
def test_py4j_s_trace_of_a_command_a_dead_jvm_left_unanswered_stays_off_the_console(debug: str) -> None:
    """When the JVM dies under a command, py4j logs an error with the socket's trace on the root logger,
    before the command line's own one line about the JVM; only ``$DIABETES_SPARK_DEBUG`` shows it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIABETES_SPARK_DEBUG": debug}
    done = subprocess.run([sys.executable, "-c", UNANSWERED], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "answer x\n", (done.stdout, done.stderr)
    shown = "Exception while sending command." in done.stderr and "Traceback" in done.stderr
    assert shown == bool(debug), done.stderr


#: A CSV whose one field is longer than a 512m heap may hold while the CSV parser grows its buffer.
FIELD_CHARS = 120_000_000


@pytest.mark.slow
def test_a_driver_out_of_heap_exits_2_naming_the_heap_and_the_setting(tmp_path: Path) -> None:
    """A fresh ``diabetes-spark ingest`` whose task runs out of a 512m heap: a local JVM exits then
    (Spark's exit code 52), and the command says so with exit 2, not as an unexpected error."""
    source = tmp_path / "wide.csv"
    with source.open("w") as f:
        f.write("AGE,SEX,BMI,BP,S1,S2,S3,S4,S5,S6,Y\n59,")
        for _ in range(FIELD_CHARS // 10_000_000):
            f.write("x" * 10_000_000)
        f.write(",32.1,101,157,93.2,38,4,4.8598,87,151\n")
    argv = ["ingest", "--quiet", "--source", str(source), "--table", str(tmp_path / "t")]
    code, lines, seconds = _fresh(argv, {"DIABETES_SPARK_DRIVER_MEMORY": "512m"}, tmp_path)
    source.unlink()  # 120 MB that pytest's kept temporary folders need not hold
    assert code == 2, lines[-5:]
    check_last_line("ingest", lines, "ran out of memory (a Java heap of 512m, under a memory limit of ")
    assert "set DIABETES_SPARK_DRIVER_MEMORY higher within that limit" in lines[-1], lines[-1]
    assert seconds < 120 and delta_versions(tmp_path) == {}
