"""The ``diabetes-spark`` console script (also ``python -m diabetes_spark``).

Each job subcommand takes the flags generated from its params dataclass (``model_name`` ->
``--model-name``), prints a summary (one JSON line on stdout with ``--json``) and exits 0; on error
it prints one line on stderr and exits non-zero (2 for a problem with the input or parameters,
1 for anything unexpected).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from diabetes_spark import __version__, params
from diabetes_spark.errors import DiabetesSparkError, ParamError
from diabetes_spark.platform import recording_class_archive

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 1
ENV_DEBUG = "DIABETES_SPARK_DEBUG"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_params(parser: argparse.ArgumentParser, cls: type, *, required: Sequence[str] = ()) -> None:
    """One flag per params field, help and choices from ``params.py``."""
    for name, default, help_text, choices in params.describe(cls):
        kwargs: dict[str, Any] = {"dest": name, "help": f"{help_text} (default: {default!r})" if default else help_text}
        if choices:
            kwargs["choices"] = choices
        if name in required:
            kwargs["required"] = True
        parser.add_argument(_flag(name), **kwargs)


def _ingest(args: argparse.Namespace) -> dict[str, Any]:
    from diabetes_spark import jobs
    from diabetes_spark.platform import get_spark

    job_params = params.from_strings(params.IngestParams, _values(args, params.IngestParams))
    return jobs.run_ingest(get_spark(), job_params)


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from diabetes_spark import jobs
    from diabetes_spark.platform import get_spark

    job_params = params.from_strings(params.TrainParams, _values(args, params.TrainParams))
    return jobs.run_training(get_spark(), job_params)


def _score(args: argparse.Namespace) -> dict[str, Any]:
    from diabetes_spark import jobs
    from diabetes_spark.platform import get_spark

    job_params = params.from_strings(params.ScoreParams, _values(args, params.ScoreParams))
    return jobs.run_batch_scoring(get_spark(), job_params)


def _notebook(args: argparse.Namespace) -> dict[str, Any]:
    from diabetes_spark.notebook import run_notebook
    from diabetes_spark.platform import get_spark

    widgets = {}
    for item in args.widget:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ParamError(f"--widget takes name=value; got {item!r}")
        widgets[name] = value
    value = run_notebook(args.path, spark=get_spark(), widgets=widgets)
    try:
        parsed = json.loads(value) if value is not None else None
    except json.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"notebook": args.path, "exit_value": value}


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from diabetes_spark.notebook import run_demo
    from diabetes_spark.platform import get_spark

    return run_demo(get_spark(), notebooks=Path(args.notebooks))


def _setup_secrets(args: argparse.Namespace) -> dict[str, Any]:
    from diabetes_spark import deploy

    return deploy.run_setup_secrets(args)


def _values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags the user gave (others keep the dataclass defaults)."""
    names = [name for name, *_ in params.describe(cls)]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


_JOBS: dict[str, tuple[type, Callable[[argparse.Namespace], dict[str, Any]], tuple[str, ...], str]] = {
    "ingest": (params.IngestParams, _ingest, ("source", "table"), "land a raw CSV in a Delta table, rejects beside it"),
    "train": (params.TrainParams, _train, ("training_data",), "train, evaluate, log, register and maybe promote a model"),
    "score": (params.ScoreParams, _score, ("input", "output"), "score a table with a registered model, idempotent per batch"),
}


#: The commands that start a local Spark session.
_STARTS_SPARK = (*_JOBS, "notebook", "demo")

_COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    **{name: spec[1] for name, spec in _JOBS.items()},
    "notebook": _notebook,
    "demo": _demo,
    "setup-secrets": _setup_secrets,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the console script."""
    parser = argparse.ArgumentParser(prog="diabetes-spark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, (cls, _, required, help_text) in _JOBS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        _add_params(p, cls, required=required)
        p.add_argument("--json", action="store_true", help="print the summary as one JSON line")

    p = sub.add_parser("notebook", help="run a Databricks source notebook locally, cell by cell")
    p.add_argument("path", help="the notebook (.py, Databricks source format)")
    p.add_argument("--widget", action="append", default=[], metavar="NAME=VALUE", help="set a widget (repeatable)")
    p.add_argument("--json", action="store_true", help="print the notebook's exit value as one JSON line")

    p = sub.add_parser("demo", help="the whole loop on the sample data through the two notebooks")
    p.add_argument("--notebooks", default="notebooks", help="folder holding the two notebooks (default: notebooks)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")

    from diabetes_spark import deploy

    p = sub.add_parser("setup-secrets", help="create the Databricks secret scope and put the project's secrets")
    deploy.add_setup_secrets_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return parser


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=False, default=str), flush=True)
        return
    for key, value in summary.items():
        print(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if os.environ.get(ENV_DEBUG) else logging.WARNING, stream=sys.stderr)
    run = _COMMANDS[args.command]
    # The first local run records the JVM's class-data archive as its JVM exits (after the summary).
    with recording_class_archive() if args.command in _STARTS_SPARK else nullcontext():
        try:
            summary = run(args)
        except DiabetesSparkError as e:
            print(f"diabetes-spark {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception as e:  # the last line of defence: one line, full trace only on request
            if os.environ.get(ENV_DEBUG):
                raise
            print(f"diabetes-spark {args.command}: unexpected {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
            return EXIT_UNEXPECTED
        _print_summary(summary, args.json)
        return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 2000 else text[:2000] + "..."
