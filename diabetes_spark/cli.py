"""The ``diabetes-spark`` console script (also ``python -m diabetes_spark``): the one command line.

Job subcommands take the flags generated from their params dataclass (``model_name`` ->
``--model-name``); ``notebook`` and ``demo`` run the notebooks locally; ``setup-secrets`` is the
deploy-time command of :mod:`diabetes_spark.deploy`. Each prints a summary
(one JSON line on stdout with ``--json``) and exits 0; on error it prints one line on stderr and
exits 2 for a problem the user can fix (a :class:`DiabetesSparkError`), 1 for a bug.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NoReturn

from diabetes_spark import __version__, commands, console, params
from diabetes_spark.console import ENV_DEBUG
from diabetes_spark.deploy import secrets
from diabetes_spark.errors import (
    EXIT_DIFFERENCES,
    ConfigurationError,
    DiabetesSparkError,
    ReplayDifferenceError,
    one_line,
    user_error,
)
from diabetes_spark.jvm_cache import recording_class_archive
from diabetes_spark.runtime import environment
from diabetes_spark.session import DEFAULT_PORT

EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 1
#: A command stopped by Ctrl-C, as shells report SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace, Mapping[str, str]], dict[str, Any]]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_params(parser: argparse.ArgumentParser, cls: type, *, required: Sequence[str] = ()) -> None:
    """One flag per params field, help and choices from ``params.py``."""
    for name, default, help_text, choices in params.describe(cls):
        kwargs: dict[str, Any] = {"dest": name, "help": f"{help_text} (default: {default!r})" if default else help_text}
        if choices:
            kwargs["choices"] = choices
        if choices == params.SWITCH:  # ``--shadow`` alone turns it on
            kwargs.update(nargs="?", const="true")
        if name in required:
            kwargs["required"] = True
        parser.add_argument(_flag(name), **kwargs)


def _values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags the user gave (others keep the dataclass defaults)."""
    names = [name for name, *_ in params.describe(cls)]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _spark(conf: Mapping[str, str]) -> Any:
    from diabetes_spark.session import get_spark

    return get_spark(conf=conf)


def _ingest(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark import jobs

    return jobs.run_ingest(_spark(conf), params.from_strings(params.IngestParams, _values(args, params.IngestParams)))


def _train(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark import jobs

    return jobs.run_training(_spark(conf), params.from_strings(params.TrainParams, _values(args, params.TrainParams)))


def _score(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark import jobs

    job_params = params.from_strings(params.ScoreParams, _values(args, params.ScoreParams))
    return jobs.run_batch_scoring(_spark(conf), job_params)


def _notebook(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark.notebook import run_notebook

    widgets = params.parse_assignments(args.widget, flag="--widget")
    value = run_notebook(args.path, spark=_spark(conf), widgets=widgets)
    try:
        parsed = json.loads(value) if value is not None else None
    except json.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"notebook": args.path, "exit_value": value}


def _connect_server(args: argparse.Namespace, _conf: Mapping[str, str]) -> dict[str, Any]:
    """A local Spark Connect server in the foreground, until Ctrl-C."""
    import subprocess

    from diabetes_spark import connect_server

    connect_server.check_port_free(args.port)
    command = connect_server.server_command(args.port)
    print(f"Spark Connect server with Delta Lake on sc://127.0.0.1:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        code = subprocess.call(command, env=connect_server.server_environment())
    except KeyboardInterrupt:  # the way to stop it: a normal end
        return {"connect_server": f"sc://127.0.0.1:{args.port}", "exit_code": 0}
    raise ConfigurationError(  # it serves until stopped: an end of its own is a failure, whatever its code
        f"the Spark Connect server on port {args.port} stopped by itself (exit code {code}; its log is above): check "
        "Java 17 and that nothing else uses the port"
    )


def _demo(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from pathlib import Path

    from diabetes_spark.demo import run_demo
    from diabetes_spark.session import small_input

    # The demo only ever reads the shipped sample: a session set for a few hundred rows.
    return run_demo(_spark(small_input(conf)), notebooks=Path(args.notebooks) if args.notebooks else None)


_JOBS: dict[str, tuple[type, Command, tuple[str, ...], str]] = {
    "ingest": (params.IngestParams, _ingest, ("source", "table"), "land a raw CSV in a Delta table, rejects beside it"),
    "train": (
        params.TrainParams,
        _train,
        ("training_data",),
        "train, evaluate, log, register and maybe promote a model",
    ),
    "score": (
        params.ScoreParams,
        _score,
        ("input", "output"),
        "score a table with a registered model, idempotent per batch",
    ),
}


def _setup_secrets(args: argparse.Namespace, _conf: Mapping[str, str]) -> dict[str, Any]:
    return secrets.run(args)


_COMMANDS: dict[str, Command] = {
    **{name: spec[1] for name, spec in _JOBS.items()},
    "notebook": _notebook,
    "demo": _demo,
    "connect-server": _connect_server,
    "setup-secrets": _setup_secrets,
    **commands.COMMANDS,
}
#: The commands that start a local Spark session.
_STARTS_SPARK = (*_JOBS, "notebook", "demo", *commands.COMMANDS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are the contract's one line (exit 2), not usage + line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535; got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the console script."""
    parser = _Parser(
        prog="diabetes-spark",
        description="Train and batch-score diabetes progression on Spark: the jobs, the notebooks run "
        "locally, the demo, and the deploy-time commands.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command, (cls, _, required, help_text) in _JOBS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        _add_params(p, cls, required=required)
        p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
        _add_quiet(p)
        _add_remote(p)

    commands.add_commands(sub, _add_common)

    p = sub.add_parser("notebook", help="run a Databricks source notebook locally, cell by cell")
    p.add_argument(
        "path", help="the notebook (.py, Databricks source format); 'train' or 'score' for the ones in the wheel"
    )
    p.add_argument("--widget", action="append", default=[], metavar="NAME=VALUE", help="set a widget (repeatable)")
    p.add_argument("--json", action="store_true", help="print the notebook's exit value as one JSON line")
    _add_quiet(p)
    _add_remote(p)

    p = sub.add_parser("demo", help="the whole loop on the sample data through the two notebooks")
    p.add_argument("--notebooks", help="folder holding the two notebooks (default: the ones shipped with the package)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    _add_remote(p)

    p = sub.add_parser("connect-server", help="run a local Spark Connect server with Delta Lake (for --remote)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")

    p = sub.add_parser("setup-secrets", help=secrets.HELP, description=secrets.HELP)
    secrets.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    _add_quiet(parser)
    _add_remote(parser)


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress on stderr: no line per step, no Spark progress bar"
    )


def _add_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--remote",
        metavar="sc://HOST:PORT",
        help="run on this Spark Connect server (sets SPARK_REMOTE, pyspark's own variable; default: $SPARK_REMOTE, "
        "else local Spark)",
    )


@contextmanager
def _remote(url: str | None) -> Iterator[bool]:
    """``SPARK_REMOTE`` set to ``url`` for the command (put back afterwards); yields whether the
    command runs over Spark Connect."""
    from diabetes_spark.session import ENV_REMOTE

    with environment({ENV_REMOTE: url or os.environ.get(ENV_REMOTE)}):
        yield bool(os.environ.get(ENV_REMOTE))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the process exit code (Ctrl-C: one line and 130)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the subcommand they were given to, as the contract's line
        parser.exit(
            EXIT_USER_ERROR,
            f"diabetes-spark {args.command}: error: unrecognized arguments: {' '.join(unknown)} "
            f"(see diabetes-spark {args.command} --help)\n",
        )
    quiet = getattr(args, "quiet", False)
    try:
        with (
            _remote(getattr(args, "remote", None)) as remote,
            console.logging_for(quiet),
            console.stdout_for(getattr(args, "json", False)) as out,
        ):
            # The first local run records the JVM's class-data archive as its JVM exits (after the summary).
            archive: AbstractContextManager[dict[str, str]] = (
                recording_class_archive() if args.command in _STARTS_SPARK and not remote else nullcontext({})
            )
            with archive as conf:
                return _run(args, conf, quiet, out)
    except KeyboardInterrupt:
        print(
            f"diabetes-spark {args.command}: interrupted: nothing of the unfinished step was committed; rerun the "
            "command to complete it (a rerun replaces what a batch wrote, and an ingest is never appended twice)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def entry(argv: Sequence[str] | None = None) -> None:
    """The console script's entry point: :func:`main`, whose exit code other than 0 is raised as
    ``SystemExit``. A Databricks Python wheel task calls the entry point and ignores what it returns;
    a raised exit code is what fails its run (and sends the failure e-mail)."""
    try:
        code = main(argv)
    except KeyboardInterrupt:  # before a command started (or after it ended): nothing to say of it
        print("diabetes-spark: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code:
        raise SystemExit(code)


def _run(args: argparse.Namespace, conf: Mapping[str, str], quiet: bool, out: Any) -> int:
    """One command: its summary printed and 0, or one line on stderr and its exit code."""
    code = _attempt(args, conf, quiet, out)
    # A failed job's traceback keeps its objects in reference cycles until a collection. Over Spark Connect
    # a fitted model's finalizer calls the server, which needs a new thread: left to the interpreter's exit,
    # where no thread can start, it hangs the process (seen when validation fails after fitting).
    gc.collect()
    return code


def _attempt(args: argparse.Namespace, conf: Mapping[str, str], quiet: bool, out: Any) -> int:
    """:func:`_run` without the collection."""
    try:
        summary = _COMMANDS[args.command](args, {**conf, "spark.ui.showConsoleProgress": "false"} if quiet else conf)
    except ReplayDifferenceError as e:  # an answer (replay: rows differ), printed as a summary
        print(f"diabetes-spark {args.command}: {e}", file=sys.stderr)
        console.print_summary(e.summary, args.json, out)
        return EXIT_DIFFERENCES
    except Exception as e:
        error = _classified(e)
        if error is not None:
            print(f"diabetes-spark {args.command}: error: {one_line(error, 2000)}", file=sys.stderr)
            return EXIT_USER_ERROR
        if os.environ.get(ENV_DEBUG):  # the last line of defence: one line, full trace only on request
            raise
        print(f"diabetes-spark {args.command}: unexpected {type(e).__name__}: {one_line(e, 2000)}", file=sys.stderr)
        return EXIT_UNEXPECTED
    console.print_summary(summary, args.json, out)
    return 0


def _classified(error: Exception) -> DiabetesSparkError | None:
    """``error`` as a user's problem, or ``None`` for a bug. The jobs name the tables and paths of
    what they classify; here are the errors of the environment: a job out of JVM memory, a JVM that
    died, Spark that did not start. The JVM's come first: an error raised as the JVM ends (an input
    that could not be read, as the context stopped) is the JVM's."""
    from diabetes_spark.session import environment_error

    return environment_error(error) or user_error(error, "this command")
