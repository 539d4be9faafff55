"""The JVM cache: the first local command records the class-data archive and the resolved jars;
later sessions map the archive and take the jars without resolving them again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diabetes_spark import jvm_cache
from diabetes_spark.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
FETCHING = "fetching Delta Lake and hadoop-azure jars (first start only)"
#: Lines only Ivy prints while it resolves packages.
IVY = re.compile(r":: resolving dependencies|found io\.delta#|:: retrieving ::")

#: Started in a fresh interpreter: a session, one query, and the JVM's options, as JSON on stdout.
PROBE = """
import json, sys
from diabetes_spark.session import get_spark
spark = get_spark(master="local[1]", conf={"spark.driver.extraJavaOptions": f"-Xlog:class+load=info:file={sys.argv[1]}"})
spark.range(3).count()
args = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
conf = spark.sparkContext.getConf()
print(json.dumps({"args": [str(a) for a in args], "jars": conf.get("spark.jars"), "packages": conf.get("spark.jars.packages")}))
"""


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        jvm_cache.ENV_JVM_CACHE: str(cache),
        "DIABETES_SPARK_MASTER": "local[1]",
        "PYTHONPATH": str(ROOT),
    }


def test_the_cache_is_named_for_its_folder_java_and_jars_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(jvm_cache.ENV_JVM_CACHE, str(tmp_path))
    archive = jvm_cache.class_archive()
    assert archive is not None and archive.parent == tmp_path and archive.suffix == ".jsa"
    assert jvm_cache.archive_options() == ""  # not recorded yet: the JVM starts without one
    assert jvm_cache.resolved_jars() is None  # nor resolved: Ivy resolves the packages
    monkeypatch.setenv(jvm_cache.ENV_JVM_CACHE, "off")
    assert jvm_cache.class_archive() is None and jvm_cache.jar_list() is None
    assert jvm_cache.archive_options() == ""


@pytest.mark.slow
def test_the_first_command_records_the_archive_and_later_sessions_map_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "jvm"
    ingest = [
        sys.executable,
        "-m",
        "diabetes_spark",
        "ingest",
        "--source",
        "sample:diabetes.csv",
        "--table",
        "lake/raw",
        "--json",
    ]
    done = subprocess.run(ingest, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # stdout is the summary alone: the JVM's notes about the archive are off
    assert [json.loads(line)["rows_written"] for line in done.stdout.splitlines()] == [437]
    # A quiet first start: one line about the jars, Ivy's output in a log beside the jar list ...
    errors = done.stderr.splitlines()
    assert errors.count(FETCHING) == 1 and not [line for line in errors if IVY.search(line)], done.stderr[-3000:]
    # Recording the archive is one INFO line, not a warning of ours.
    assert len([line for line in errors if line.startswith("recording the JVM's class-data archive ")]) == 1, errors
    assert not [line for line in errors if line.startswith("WARNING diabetes_spark")], errors
    (ivy_log,) = cache.glob("ivy-*.log")
    assert IVY.search(ivy_log.read_text()), "Ivy's resolution is kept in its log"
    # ... and each step's start and end, with the rows where they are known.
    steps = [line for line in errors if line.startswith("ingest: ")]
    assert [re.sub(r"\d+\.\d s$", "T s", line) for line in steps] == [
        "ingest: read ...", "ingest: read ... T s", "ingest: validate ...", "ingest: validate 442 rows ... T s",
        "ingest: write ...", "ingest: write 442 rows ... T s",
    ]  # fmt: skip
    again = subprocess.run(
        [*ingest, "--quiet"], cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    quiet = again.stderr.splitlines()
    assert not [line for line in quiet if line == FETCHING or IVY.search(line) or line.startswith("ingest: ")], quiet
    monkeypatch.setenv(jvm_cache.ENV_JVM_CACHE, str(cache))
    archive, listing = jvm_cache.class_archive(), jvm_cache.jar_list()
    assert archive is not None and listing is not None
    names = sorted([archive.name, listing.name, f"ivy-{listing.stem}.log"])
    assert sorted(p.name for p in cache.iterdir()) == names  # complete, no partial left
    jars = listing.read_text().split()
    assert any(Path(jar).name.startswith("io.delta_delta-spark") for jar in jars) and all(
        Path(jar).is_file() for jar in jars
    )

    log = tmp_path / "classes.log"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(log)],
        cwd=tmp_path,
        env=_env(cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    started = json.loads(probe.stdout.splitlines()[-1])
    assert f"-XX:SharedArchiveFile={archive}" in started["args"]
    assert (started["jars"].split(","), started["packages"]) == (jars, None)  # no Ivy resolution
    # classes mapped from the recorded (top-layer) archive rather than loaded from the jars
    mapped = sum("source: shared objects file (top)" in line for line in log.read_text().splitlines())
    assert mapped > 1000, mapped


@pytest.mark.slow
def test_a_failed_first_fetch_shows_the_log_path_and_its_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(jvm_cache.ENV_JVM_CACHE, str(tmp_path))
    with pytest.raises(ConfigurationError) as failed:
        jvm_cache.fetch_jars(["org.example.nonexistent:no-such-artifact:0.0.1"])
    message = str(failed.value)
    (log,) = tmp_path.glob("ivy-*.log")
    assert f"could not fetch the Delta Lake and hadoop-azure jars (exit code 1); Ivy's log is {log}, ending:" in message
    assert "no-such-artifact" in message and "Check the network to Maven Central" in message
    assert jvm_cache.resolved_jars() is None  # nothing half-resolved is remembered
