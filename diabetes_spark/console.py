"""The console of the command line: progress and log lines on stderr, the summary on stdout.

With ``--json`` stdout holds exactly one line, the summary: everything else the command prints,
Spark's JVM and other libraries included, goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from diabetes_spark.runtime import environment

#: Environment variable: INFO logs of every library, and a bug's full trace.
ENV_DEBUG = "DIABETES_SPARK_DEBUG"
#: MLflow's variable for its loggers' level.
ENV_MLFLOW_LOGGING_LEVEL = "MLFLOW_LOGGING_LEVEL"


class ConsoleFormat(logging.Formatter):
    """Progress lines as they are (``score: write 38 rows ... 1.2 s``); warnings and errors with
    their level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {super().format(record)}"


class UnansweredCommands(logging.Filter):
    """Drops py4j's error for a command the JVM never answered (it died under the job): py4j logs it,
    with the socket's trace, on the root logger, while the command line reports that JVM's failure
    itself, in its one line (:func:`diabetes_spark.session.environment_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and "py4j" in record.pathname.replace(os.sep, "/").split("/"))


@contextmanager
def logging_for(quiet: bool) -> Iterator[None]:
    """Each job step's start and end (``diabetes_spark.progress``) and the jobs' messages on stderr
    at INFO unless ``quiet``; everything else at WARNING (py4j's trace of a command a dead JVM left
    unanswered not at all), or at INFO with ``$DIABETES_SPARK_DEBUG``.
    The loggers' own levels are put back afterwards, for callers of :func:`main` in a longer-lived
    process."""
    from diabetes_spark.telemetry import COMPONENT_INGEST, COMPONENT_SCORE, COMPONENT_TRAIN

    debug = bool(os.environ.get(ENV_DEBUG))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormat())
    if not debug:
        handler.addFilter(UnansweredCommands())
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, handlers=[handler])
    shown = (COMPONENT_TRAIN, COMPONENT_SCORE, COMPONENT_INGEST, "diabetes_spark.progress", "diabetes_spark.jvm_cache")
    loggers = [logging.getLogger(n) for n in shown]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # MLflow's own INFO lines (its database set-up, "Successfully registered model") only when asked
    # for: MLflow reads the variable as it is imported; a user's own setting wins.
    mlflow_level = os.environ.get(ENV_MLFLOW_LOGGING_LEVEL) or ("INFO" if debug else "WARNING")
    if "mlflow" in sys.modules:  # imported already (a longer-lived caller of main): set it directly
        loggers.append(logging.getLogger("mlflow"))
        levels.append(loggers[-1].level)
        loggers[-1].setLevel(mlflow_level)
    try:
        with environment({ENV_MLFLOW_LOGGING_LEVEL: mlflow_level}):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def print_summary(summary: dict[str, Any], as_json: bool, out: Any) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=False, default=str), file=out, flush=True)
        return
    for key, value in summary.items():
        print(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}", file=out)
    out.flush()


@contextmanager
def stdout_for(as_json: bool) -> Iterator[Any]:
    """With ``--json``, the command's own output (Spark's JVM, Ivy, Delta, Python libraries) goes to
    stderr, file descriptor 1 included, so stdout holds only the summary line; yields where to
    print the summary."""
    if not as_json:
        yield sys.stdout
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (an embedding host): nothing to redirect
        yield sys.stdout
        return
    summary, python_stdout = sys.stdout, sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield _Restored(saved, summary)
    finally:
        sys.stdout = python_stdout
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class _Restored:
    """The real stdout, written to after the command, when descriptor 1 is put back."""

    def __init__(self, saved: int, stream: Any) -> None:
        self.saved, self.stream = saved, stream

    def write(self, text: str) -> int:
        self.stream.flush()
        os.dup2(self.saved, 1)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
