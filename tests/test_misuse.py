"""The misuse table: everyday mistakes against the command line, each ending as the contract says.

Every row runs one mistake through the CLI (in this process, on the suite's Spark session; in a
fresh process only where the mistake needs one: a bad master, a killed JVM, a Spark Connect URL)
and checks that it exits 2 (130 for Ctrl-C) with one line on stderr, ``diabetes-spark <command>:
error: ...``, naming what the user gave, and that no Delta table changed or was created. The
integrity rows below the table check the rows themselves: the file named is the file read, and a
rerun after an interrupted write completes it without doubling a row.

The next mistake someone finds is added here, as a row of :data:`MISUSE`.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import TRAINED_MODEL
from diabetes_spark import cli, delta_writes, storage
from diabetes_spark.data import sample_path

MODEL = TRAINED_MODEL
EXPERIMENT = "misuse-tests"
ROOT = Path(__file__).resolve().parent.parent
SCORE = ["score", "--quiet", "--model-name", MODEL, "--experiment", EXPERIMENT]
INGEST = ["ingest", "--quiet"]
TRAIN = ["train", "--quiet", "--experiment", EXPERIMENT]
#: The notebooks run locally without ADLS Gen2 secrets.
NO_ADLS = ["--widget", "storage_account_secret="]


# ---------------------------------------------------------------- the places a row may use


def _csv(tmp: Path, name: str = "batch.csv") -> Path:
    path = tmp / name
    shutil.copy(sample_path("scoring_batch.csv"), path)
    return path


def _delta_input(spark, tmp: Path) -> Path:
    """``{tmp}/input``: the sample scoring batch as a Delta table of two commits."""
    path = tmp / "input"
    df = storage.read_table(spark, storage.resolve(str(_csv(tmp)))).drop("_corrupt_record")
    half = df.limit(20)
    half.write.format("delta").save(str(path))
    df.subtract(half).write.format("delta").mode("append").save(str(path))
    return path


def _places(spark, tmp: Path) -> None:
    """What the rows refer to: a file, a folder of other files, a folder that is not Delta."""
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("someone else's files\n")
    _csv(tmp)


def _truncated_log(spark, tmp: Path) -> None:
    path = _delta_input(spark, tmp)
    commit = path / "_delta_log" / "00000000000000000001.json"
    commit.write_text(commit.read_text()[:40])


def _missing_data_file(spark, tmp: Path) -> None:
    path = _delta_input(spark, tmp)
    next(path.glob("*.parquet")).unlink()


def _other_table(spark, tmp: Path) -> None:
    """``{tmp}/other``: a Delta table of another kind (an ingest's rejects)."""
    assert (
        cli.main(
            [
                *INGEST,
                "--source",
                "sample:diabetes.csv",
                "--table",
                str(tmp / "landed"),
                "--rejects",
                str(tmp / "other"),
            ]
        )
        == 0
    )


def _gone_artifacts(spark, tmp: Path) -> None:
    """A registered version of ``gone_model`` whose artifacts are not there."""
    client = MlflowClient()
    client.create_registered_model("gone_model")
    client.create_model_version("gone_model", source=str(tmp / "removed-model"))


def _extreme_training_data(spark, tmp: Path) -> None:
    """Training rows valid one by one, whose values overflow every fit."""
    lines = sample_path("diabetes.csv").read_text().splitlines()
    rows = [",".join(["1e308"] * 10 + [value.split(",")[-1]]) for value in lines[1:]]
    (tmp / "extreme.csv").write_text("\n".join([lines[0], *rows]) + "\n")


@dataclass(frozen=True)
class Misuse:
    """One mistake: the command line (``{tmp}`` is the row's folder), what the error line must name
    (a regular expression), the preparation of the folder, the environment."""

    name: str
    argv: list[str]
    names: str
    prepare: Callable[..., object] = lambda spark, tmp: None
    env: dict[str, str] = field(default_factory=dict)
    code: int = cli.EXIT_USER_ERROR


MISUSE = [
    # inputs
    Misuse(
        "input is a folder but not Delta", [*SCORE, "--input", "{tmp}/folder", "--output", "{tmp}/p"], "{tmp}/folder"
    ),
    Misuse(
        "input is a file of no known kind", [*SCORE, "--input", "{tmp}/afile", "--output", "{tmp}/p"], "{tmp}/afile"
    ),
    Misuse(
        "input's Delta log is truncated",
        [*SCORE, "--input", "{tmp}/input", "--output", "{tmp}/p"],
        "{tmp}/input",
        _truncated_log,
    ),
    Misuse(
        "input lost a data file",
        [*SCORE, "--input", "{tmp}/input", "--output", "{tmp}/p"],
        "{tmp}/input",
        _missing_data_file,
    ),
    Misuse(
        "input in a schema that does not exist",
        [*SCORE, "--input", "nosuchschema.batch", "--output", "{tmp}/p"],
        "nosuchschema.batch",
    ),
    Misuse(
        "input three-level name locally",
        [*SCORE, "--input", "main.diabetes.batch", "--output", "{tmp}/p"],
        "main.diabetes.batch",
    ),
    Misuse(
        "ingest source missing", [*INGEST, "--source", "{tmp}/missing.csv", "--table", "{tmp}/t"], "{tmp}/missing.csv"
    ),
    Misuse("sample that is not shipped", [*SCORE, "--input", "sample:nosuch.csv", "--output", "{tmp}/p"], "nosuch.csv"),
    # outputs
    Misuse("output under a file", [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/afile/p"], "{tmp}/afile/p"),
    Misuse(
        "rejects under a file",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--rejects", "{tmp}/afile/r"],
        "{tmp}/afile/r",
    ),
    Misuse(
        "output cannot be created",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "/proc/diabetes-spark/p"],
        "/proc/diabetes-spark/p",
    ),
    Misuse(
        "output and rejects the same",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--rejects", "{tmp}/p/"],
        "{tmp}/p",
    ),
    Misuse(
        "output inside the Delta input",
        [*SCORE, "--input", "{tmp}/input", "--output", "{tmp}/input/p"],
        "{tmp}/input/p",
        lambda s, t: _delta_input(s, t),
    ),
    Misuse(
        "output is the Delta input",
        [*SCORE, "--input", "{tmp}/input", "--output", "{tmp}/input"],
        "{tmp}/input",
        lambda s, t: _delta_input(s, t),
    ),
    Misuse(
        "output inside the CSV input's place",
        [*SCORE, "--input", "{tmp}/folder", "--output", "{tmp}/folder/p"],
        "{tmp}/folder",
    ),
    Misuse(
        "output is a table of another kind",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/other"],
        "{tmp}/other",
        _other_table,
    ),
    Misuse(
        "output is a folder of other files",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/folder"],
        "{tmp}/folder",
    ),
    Misuse("output is a file", [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/afile"], "{tmp}/afile"),
    Misuse(
        "output three-level name locally",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "main.diabetes.p"],
        "main.diabetes.p",
    ),
    Misuse(
        "output in a schema that does not exist",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "nosuchschema.p"],
        "nosuchschema",
    ),
    Misuse(
        "ingest table under a file",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/afile/t"],
        "{tmp}/afile/t",
    ),
    Misuse(
        "ingest rejects under a file",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/t", "--rejects", "{tmp}/afile/r"],
        "{tmp}/afile/r",
    ),
    Misuse(
        "ingest table and rejects the same",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/t", "--rejects", "{tmp}/t"],
        "{tmp}/t",
    ),
    Misuse(
        "ingest into a table of another kind",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/other"],
        "{tmp}/other",
        _other_table,
    ),
    Misuse(
        "ingest into a folder of other files",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/folder"],
        "{tmp}/folder",
    ),
    # numbers
    Misuse(
        "NaN reject limit",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--max-reject-fraction", "nan"],
        "max_reject_fraction",
    ),
    Misuse(
        "infinite drift threshold",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--drift-threshold", "inf"],
        "drift_threshold",
    ),
    Misuse(
        "NaN train fraction",
        [*TRAIN, "--training-data", "sample:diabetes.csv", "--train-fraction", "nan"],
        "train_fraction",
    ),
    Misuse(
        "infinite regularisation", [*TRAIN, "--training-data", "sample:diabetes.csv", "--reg-param", "inf"], "reg_param"
    ),
    Misuse(
        "ingest -inf reject limit",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/t", "--max-reject-fraction=-inf"],
        "max_reject_fraction",
    ),
    Misuse(
        "model version not a number",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--model-version", "latest"],
        "latest",
    ),
    Misuse(
        "batch id with a space",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--batch-id", "a b"],
        "'a b'",
    ),
    # models and names
    Misuse(
        "model name MLflow refuses (train)",
        [*TRAIN, "--training-data", "sample:diabetes.csv", "--model-name", "team/model"],
        "team/model",
    ),
    Misuse(
        "model name MLflow refuses (score)",
        ["score", "--quiet", "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--model-name", "a:b"],
        "a:b",
    ),
    Misuse(
        "alias that does not exist",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--model-alias", "nosuch"],
        "nosuch",
    ),
    Misuse(
        "version whose artifacts are gone",
        [
            "score",
            "--quiet",
            "--input",
            "{tmp}/batch.csv",
            "--output",
            "{tmp}/p",
            "--model-name",
            "gone_model",
            "--model-version",
            "1",
        ],
        "gone_model",
        _gone_artifacts,
    ),
    Misuse(
        "training data no fit survives",
        [*TRAIN, "--training-data", "{tmp}/extreme.csv", "--model-name", "extreme_model"],
        "extreme",
        _extreme_training_data,
    ),
    # the environment
    Misuse(
        "MLflow store cannot be opened",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "MLFLOW_TRACKING_URI",
        env={"MLFLOW_TRACKING_URI": "sqlite:////proc/diabetes-spark/mlflow.db"},
    ),
    Misuse(
        "workspace folder under a file",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "DIABETES_SPARK_HOME",
        env={"DIABETES_SPARK_HOME": "{tmp}/afile/home", "MLFLOW_TRACKING_URI": ""},
    ),
    Misuse(
        "tracking server that is not there",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "MLFLOW_TRACKING_URI",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{closed}"},
    ),
    Misuse(
        "tracking server that is not MLflow",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "MLFLOW_TRACKING_URI",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{http}"},
    ),
    Misuse(
        "tracking server that never answers",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "MLFLOW_TRACKING_URI",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{silent}", "DIABETES_SPARK_CONNECT_TIMEOUT": "2"},
    ),
    Misuse(
        "connect timeout that is not a number",
        [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p"],
        "DIABETES_SPARK_CONNECT_TIMEOUT",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:{closed}", "DIABETES_SPARK_CONNECT_TIMEOUT": "soon"},
    ),
    # the other subcommands
    Misuse(
        "ingest mode that does not exist",
        [*INGEST, "--source", "sample:diabetes.csv", "--table", "{tmp}/t", "--mode", "upsert"],
        "upsert",
    ),
    Misuse("score without an output", [*SCORE, "--input", "{tmp}/batch.csv"], "--output"),
    Misuse(
        "estimator that does not exist",
        [*TRAIN, "--training-data", "sample:diabetes.csv", "--estimator", "xgboost"],
        "xgboost",
    ),
    Misuse(
        "unknown flag", [*SCORE, "--input", "{tmp}/batch.csv", "--output", "{tmp}/p", "--modelname", "m"], "--modelname"
    ),
    Misuse(
        "notebook widget of the wrong type",
        ["notebook", "--quiet", "train", *NO_ADLS, "--widget", "max_iter=many"],
        "max_iter",
    ),
    Misuse(
        "notebook widget that does not exist",
        ["notebook", "--quiet", "score", *NO_ADLS, "--widget", "outptu={tmp}/p"],
        "outptu",
    ),
    Misuse("notebook widget without a value", ["notebook", "--quiet", "score", "--widget", "output"], "output"),
    Misuse(
        "notebook secret scope empty",
        ["notebook", "--quiet", "score", *NO_ADLS, "--widget", "secret_scope="],
        "secret_scope",
    ),
    Misuse(
        "notebook secret that is missing",
        [
            "notebook",
            "--quiet",
            "score",
            "--widget",
            "storage_account_secret=no-such-key",
            "--widget",
            "input={tmp}/batch.csv",
            "--widget",
            "output={tmp}/p",
        ],
        "no-such-key",
    ),
    Misuse(
        "notebook telemetry backend that does not exist",
        ["notebook", "--quiet", "score", *NO_ADLS, "--widget", "telemetry_backend=carrier-pigeon"],
        "carrier-pigeon",
    ),
    Misuse(
        "notebook input that does not exist",
        [
            "notebook",
            "--quiet",
            "score",
            *NO_ADLS,
            "--widget",
            "input={tmp}/missing.csv",
            "--widget",
            "output={tmp}/p",
            "--widget",
            f"model_name={MODEL}",
        ],
        "{tmp}/missing.csv",
    ),
    Misuse("notebook that does not exist", ["notebook", "--quiet", "{tmp}/nb.py"], "{tmp}/nb.py"),
    Misuse("demo with a folder lacking the notebooks", ["demo", "--notebooks", "{tmp}/folder"], "{tmp}/folder"),
    Misuse("connect server port out of range", ["connect-server", "--port", "70000"], "70000"),
    Misuse("connect server port in use", ["connect-server", "--port", "{taken}"], "{taken}"),
    Misuse("setup-secrets without a scope", ["setup-secrets"], "--scope"),
]


# ---------------------------------------------------------------- servers that are not what they should be


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # an HTTP server of something else: HTML, 404
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>nothing here</html>")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    """Ports: closed, an HTTP server of another kind, a socket that accepts and never answers, a
    port in use."""
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    yield {
        "closed": str(_closed_port()),
        "http": str(http_server.server_address[1]),
        "silent": str(silent.getsockname()[1]),
        "taken": str(silent.getsockname()[1]),
    }
    http_server.shutdown()
    silent.close()


# ---------------------------------------------------------------- what is checked


def delta_versions(*roots: Path) -> dict[str, int]:
    """Every Delta table under ``roots``: its folder -> its latest version (from its log's file names)."""
    found = {}
    for root in roots:
        for log in root.rglob("_delta_log"):
            versions = [int(p.name.split(".")[0]) for p in log.glob("*.json") if p.name.split(".")[0].isdigit()]
            found[str(log.parent)] = max(versions, default=-1)
    return found


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str], float]:
    """``(exit code, stdout, stderr lines, seconds)`` of the console script run in this process."""
    began = time.monotonic()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()], time.monotonic() - began


def check_error_line(command: str, lines: list[str], names: str) -> None:
    """stderr is one line, the contract's, and it names what the user gave."""
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"diabetes-spark {command}: error: "), lines[0]
    assert "unexpected" not in lines[0] and "Traceback" not in lines[0]
    assert re.search(re.escape(names), lines[0]), (names, lines[0])


@pytest.mark.parametrize("case", MISUSE, ids=[case.name for case in MISUSE])
def test_misuse_says_so_and_changes_nothing(
    spark,
    mlflow_home: Path,
    trained,
    services: dict[str, str],
    case: Misuse,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {"tmp": str(tmp_path), **services}
    _places(spark, tmp_path)
    case.prepare(spark, tmp_path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(**values))
    capsys.readouterr()
    before = delta_versions(tmp_path, Path(spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")))
    argv = [arg.format(**values) for arg in case.argv]
    code, _, lines, seconds = run_cli(argv, capsys)
    assert code == case.code, lines
    command = argv[0]
    check_error_line(command, lines, case.names.format(**values))
    assert seconds < 30, seconds
    after = delta_versions(tmp_path, Path(spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")))
    assert after == before, "a table changed or was created"


# ---------------------------------------------------------------- integrity: the rows themselves


def _rows(spark, location: Path) -> int:
    return storage.read_table(spark, storage.resolve(str(location))).count()


def test_a_file_name_with_glob_characters_is_read_as_written(
    spark, mlflow_home: Path, trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch[1].csv`` is that file, not ``batch1.csv`` (which Hadoop's glob would match)."""
    lines = sample_path("scoring_batch.csv").read_text().splitlines()
    (tmp_path / "batch[1].csv").write_text("\n".join(lines[:6]) + "\n")
    (tmp_path / "batch1.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "p"
    code, stdout, lines_err, _ = run_cli(
        [*SCORE, "--json", "--input", str(tmp_path / "batch[1].csv"), "--output", str(out)], capsys
    )
    assert code == 0, lines_err
    summary = json.loads(stdout)
    assert summary["rows_in"] == 5 == _rows(spark, out) + _rows(spark, tmp_path / "p_rejects")


def test_a_compressed_csv_is_read(
    spark, mlflow_home: Path, trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip

    source = tmp_path / "batch.csv.gz"
    source.write_bytes(gzip.compress(sample_path("scoring_batch.csv").read_bytes()))
    code, stdout, lines, _ = run_cli(
        [*SCORE, "--json", "--input", str(source), "--output", str(tmp_path / "p")], capsys
    )
    assert code == 0, lines
    expected = len(sample_path("scoring_batch.csv").read_text().splitlines()) - 1
    summary = json.loads(stdout)
    assert summary["rows_in"] == expected == _rows(spark, tmp_path / "p") + _rows(spark, tmp_path / "p_rejects")


def _interrupt_writing(monkeypatch: pytest.MonkeyPatch, table: Path) -> None:
    """Ctrl-C as the write to ``table`` starts (after the other table's commit)."""
    real = delta_writes.write_delta

    def write(df, ref, **options):
        if ref.location.rstrip("/") == str(table):
            raise KeyboardInterrupt
        return real(df, ref, **options)

    monkeypatch.setattr(delta_writes, "write_delta", write)


def test_an_ingest_interrupted_between_its_tables_reruns_to_each_row_once(
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table, rejects = tmp_path / "t", tmp_path / "t_rejects"
    argv = [*INGEST, "--json", "--source", "sample:diabetes.csv", "--table", str(table)]
    _interrupt_writing(monkeypatch, rejects)
    code, stdout, lines, _ = run_cli(argv, capsys)
    assert (code, stdout) == (cli.EXIT_INTERRUPTED, "")
    assert len(lines) == 1 and lines[0].startswith("diabetes-spark ingest: interrupted: "), lines
    landed = _rows(spark, table)
    monkeypatch.undo()
    for _ in range(2):  # the retry completes the rejects; a further run changes nothing
        code, stdout, lines, _ = run_cli(argv, capsys)
        assert code == 0, lines
        summary = json.loads(stdout)
        assert summary["rows_in"] == summary["rows_written"] + summary["rows_rejected"]
        assert (_rows(spark, table), _rows(spark, rejects)) == (landed, summary["rows_rejected"])
    assert landed == summary["rows_written"] > 0 and summary["rows_rejected"] > 0


def test_a_score_interrupted_between_its_tables_reruns_to_the_batch_exactly(
    spark,
    mlflow_home: Path,
    trained,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "batch.csv"
    shutil.copy(sample_path("scoring_batch.csv"), source)  # it holds rows to reject
    out, rejects = tmp_path / "p", tmp_path / "p_rejects"
    argv = [*SCORE, "--json", "--input", str(source), "--output", str(out)]
    _interrupt_writing(monkeypatch, rejects)
    code, _, lines, _ = run_cli(argv, capsys)
    assert code == cli.EXIT_INTERRUPTED and lines[0].startswith("diabetes-spark score: interrupted: "), lines
    monkeypatch.undo()
    code, stdout, lines, _ = run_cli(argv, capsys)
    assert code == 0, lines
    summary = json.loads(stdout)
    assert (_rows(spark, out), _rows(spark, rejects)) == (summary["rows_scored"], summary["rows_rejected"])
    assert (
        summary["rows_scored"] + summary["rows_rejected"]
        == summary["rows_in"]
        == len(source.read_text().splitlines()) - 1
    )


def test_an_interrupt_while_reading_creates_no_table(
    spark, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "read_versioned", interrupted)  # read_table reads through it
    code, stdout, lines, _ = run_cli(
        [*INGEST, "--source", "sample:diabetes.csv", "--table", str(tmp_path / "t")], capsys
    )
    assert (code, stdout, len(lines)) == (cli.EXIT_INTERRUPTED, "", 1), lines
    assert delta_versions(tmp_path) == {}


def test_json_stdout_is_one_line_whatever_writes_to_descriptor_1(
    spark, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library or the JVM writing to file descriptor 1 (Ivy, Delta) does not reach stdout with ``--json``."""
    real = storage.read_versioned

    def noisy(*args, **kwargs):
        os.write(1, b"noise from a library\n")
        print("noise from Python")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "read_versioned", noisy)  # read_table reads through it
    code = cli.main([*INGEST, "--json", "--source", "sample:diabetes.csv", "--table", str(tmp_path / "t")])
    captured = capfd.readouterr()
    assert code == 0
    assert len(captured.out.splitlines()) == 1 and json.loads(captured.out)["rows_in"] > 0, captured.out
    assert "noise from a library" in captured.err and "noise from Python" in captured.err


# ---------------------------------------------------------------- mistakes that need a fresh process


def _fresh(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> tuple[int, list[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "diabetes_spark", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()], time.monotonic() - began


def check_last_line(command: str, lines: list[str], names: str) -> None:
    """A fresh JVM prints its own start-up lines first: the contract's line is the last, and the only one of ours."""
    assert lines and lines[-1].startswith(f"diabetes-spark {command}: error: "), lines
    marked = [i for i, line in enumerate(lines) if "Traceback" in line or "unexpected" in line]
    assert not marked, "\n".join(lines[max(0, marked[0] - 3) : marked[0] + 12])  # the lines around the first
    assert names in lines[-1], (names, lines[-1])


@pytest.mark.parametrize(
    ("name", "env", "names"),
    [
        ("a master Spark refuses", {"DIABETES_SPARK_MASTER": "nosuch://master"}, "nosuch://master"),
        ("a Spark Connect URL at something else", {"SPARK_REMOTE": "sc://127.0.0.1:{http}"}, "SPARK_REMOTE"),
        ("a Spark Connect URL where nothing listens", {"SPARK_REMOTE": "sc://127.0.0.1:{closed}"}, "SPARK_REMOTE"),
        ("a Spark Connect URL that never answers", {"SPARK_REMOTE": "sc://127.0.0.1:{silent}"}, "SPARK_REMOTE"),
    ],
)
def test_an_environment_spark_cannot_use_is_named(
    services: dict[str, str], tmp_path: Path, name: str, env: dict[str, str], names: str
) -> None:
    values = {k: v.format(**services) for k, v in env.items()}
    argv = ["ingest", "--quiet", "--source", "sample:diabetes.csv", "--table", str(tmp_path / "t")]
    code, lines, seconds = _fresh(argv, {**values, "DIABETES_SPARK_CONNECT_TIMEOUT": "5"}, tmp_path)
    assert code == cli.EXIT_USER_ERROR, lines
    check_last_line("ingest", lines, names.format(**services))
    assert seconds < 60 and delta_versions(tmp_path) == {}


@pytest.mark.parametrize("cap", [None, 2 << 30], ids=["machine", "cgroup"])
def test_a_jvm_killed_during_the_job_is_named_with_its_memory_limit(tmp_path: Path, cap: int | None) -> None:
    """The JVM killed as the model loads (as the kernel's OOM killer would): exit 2, the limit named;
    under a memory cgroup (tests/cgroup.py), the cgroup's limit."""
    from tests.cgroup import memory_cgroup, refusal

    if cap is not None and refusal():
        pytest.skip(refusal())
    script = tmp_path / "kill_jvm.py"
    script.write_text(
        "import os, signal, sys\n"
        "from diabetes_spark import cli, storage\n"
        "real = storage.read_versioned\n"
        "def read_then_die(spark, *args, **kwargs):\n"
        "    from pyspark import SparkContext\n"
        "    os.kill(SparkContext._gateway.proc.pid, signal.SIGKILL)\n"
        "    SparkContext._gateway.proc.wait()\n"
        "    return real(spark, *args, **kwargs)\n"
        "storage.read_versioned = read_then_die\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    began = time.monotonic()
    argv = [sys.executable, str(script), "ingest", "--quiet", "--source", "sample:diabetes.csv"]
    argv += ["--table", str(tmp_path / "t")]
    options = {"env": {**os.environ, "PYTHONPATH": str(ROOT)}, "cwd": tmp_path, "timeout": 240}
    if cap is None:
        done = subprocess.run(argv, capture_output=True, text=True, **options)  # type: ignore[call-overload]
    else:
        with memory_cgroup(cap) as group:
            done = group.run(argv, **options)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == cli.EXIT_USER_ERROR, lines
    check_last_line("ingest", lines, "the Spark JVM died during the job")
    assert "GiB" in lines[-1] and "DIABETES_SPARK_DRIVER_MEMORY" in lines[-1]
    if cap is not None:
        assert "under a memory limit of 2.0 GiB" in lines[-1], lines[-1]
    assert time.monotonic() - began < 120 and delta_versions(tmp_path) == {}
