"""Every failure a user can cause exits 2 with one line naming the problem and what to do;
exit 1 is only for bugs."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from diabetes_spark import cli, jobs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["score", "--input", "sample:scoring_batch.csv", "--output", "{tmp}/out.csv"],
            r"score: error: cannot derive a rejects table from the csv file .*out\.csv: write to a Delta table .*--rejects",
        ),
        (["notebook", "nb.py", "--widget", "no_value"], r"notebook: error: --widget takes NAME=VALUE; got 'no_value'"),
        (
            ["ingest", "--source", "{tmp}/missing.csv", "--table", "{tmp}/t"],
            r"ingest: error: input .*missing\.csv does not exist",
        ),
        (
            ["train", "--training-data", "sample:diabetes.csv", "--train-fraction", "1.5"],
            r"train: error: train_fraction must be in \(0, 1\); got 1\.5",
        ),
    ],
)
def test_a_user_error_exits_2_with_one_line(
    spark, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert (code, line.split(":")[0]) == (cli.EXIT_USER_ERROR, f"diabetes-spark {argv[0]}")
    assert re.search(message, line), line


def test_a_bug_exits_1_as_unexpected(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args, **kwargs):
        raise KeyError("an internal invariant")

    monkeypatch.setattr(jobs, "run_ingest", broken)
    monkeypatch.delenv("DIABETES_SPARK_DEBUG", raising=False)
    code, line = _run(["ingest", "--source", "sample:diabetes.csv", "--table", str(tmp_path / "t")], capsys)
    assert (code, line) == (cli.EXIT_UNEXPECTED, "diabetes-spark ingest: unexpected KeyError: 'an internal invariant'")


def test_the_entry_point_raises_the_exit_code_a_wheel_task_would_ignore_if_returned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Databricks Python wheel task ignores the entry point's return value: a failure must raise."""
    with pytest.raises(SystemExit) as failed:
        cli.entry(["notebook", "nb.py", "--widget", "no_value"])
    assert failed.value.code == cli.EXIT_USER_ERROR
    monkeypatch.setattr(cli, "main", lambda argv=None: 0)
    assert cli.entry([]) is None  # success: nothing raised, the task succeeds
