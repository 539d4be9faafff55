"""The console script's subcommands on a model's aliases and batches: ``promote``, ``rollback``,
``rescore``, ``replay`` (:mod:`diabetes_spark.jobs.lifecycle`, :mod:`diabetes_spark.jobs.rescore`).
Their flags and handlers; the jobs are imported when a command runs, so the CLI starts light.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from diabetes_spark.params import ALIAS_LEDGER_HELP, DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME, DFS_TMPDIR_HELP

Command = Callable[[argparse.Namespace, Mapping[str, str]], dict[str, Any]]


def _spark(conf: Mapping[str, str]) -> Any:
    from diabetes_spark.session import get_spark

    return get_spark(conf=conf)


def _promote(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark.jobs.lifecycle import run_promote

    return run_promote(
        _spark(conf),
        model_name=args.model_name,
        version=args.version,
        reason=args.reason,
        force=args.force,
        alias_ledger=args.alias_ledger,
    )


def _rollback(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    if args.rescore and not args.output:
        from diabetes_spark.errors import ParamError

        raise ParamError("rollback --rescore needs --output TABLE: the predictions table whose batches to rescore")
    from diabetes_spark.jobs.lifecycle import run_rollback

    return run_rollback(
        _spark(conf),
        model_name=args.model_name,
        reason=args.reason,
        to=args.to or "",
        rescore_output=args.output if args.rescore else "",
        experiment=args.experiment,
        alias_ledger=args.alias_ledger,
        dfs_tmpdir=args.dfs_tmpdir,
    )


def _rescore(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark.jobs import rescore

    return rescore.run_rescore(
        _spark(conf),
        output=args.output,
        model_version=args.model_version,
        model_name=args.model_name,
        experiment=args.experiment,
        alias_ledger=args.alias_ledger,
        dfs_tmpdir=args.dfs_tmpdir,
    )


def _replay(args: argparse.Namespace, conf: Mapping[str, str]) -> dict[str, Any]:
    from diabetes_spark.jobs import rescore

    return rescore.run_replay(_spark(conf), output=args.output, batch_id=args.batch_id, dfs_tmpdir=args.dfs_tmpdir)


#: Each subcommand: its function, its help, and the flags it takes beyond ``--json``/``--quiet``/``--remote``.
HELP = {
    "promote": "move champion to a version, through the alias ledger (refuses a version that failed validation)",
    "rollback": "move champion back to the version before it (or --to V), through the alias ledger; --rescore "
    "repairs the batches the version left wrote",
    "rescore": "score again, with the current champion, every batch a model version wrote to a predictions table",
    "replay": "score a batch again from its recorded input and model version and compare with its stored rows "
    "(exit 0 identical, 3 differ, 2 cannot replay); writes nothing",
}
COMMANDS: dict[str, Command] = {"promote": _promote, "rollback": _rollback, "rescore": _rescore, "replay": _replay}


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The four subcommands on ``sub`` (an argparse subparsers object); ``common`` adds the flags
    every command has (``--json``, ``--quiet``, ``--remote``)."""
    parsers = {name: sub.add_parser(name, help=text, description=text) for name, text in HELP.items()}
    for name in ("promote", "rollback", "rescore"):
        parsers[name].add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model name")
        parsers[name].add_argument("--alias-ledger", default="", help=ALIAS_LEDGER_HELP)
    p = parsers["promote"]
    p.add_argument("--version", required=True, help="the model version to make champion")
    p.add_argument("--reason", required=True, help="why (recorded in the alias ledger)")
    p.add_argument("--force", action="store_true", help="promote even a version whose tags say it failed validation")
    p = parsers["rollback"]
    p.add_argument("--to", help="the version to go back to (default: the one before the current, by the ledger)")
    p.add_argument("--reason", required=True, help="why (recorded in the alias ledger)")
    p.add_argument("--rescore", action="store_true", help="then rescore the batches the version left wrote to --output")
    p.add_argument("--output", help="with --rescore: the predictions table to repair")
    p = parsers["rescore"]
    p.add_argument("--output", required=True, help="the predictions table whose batches to rescore")
    p.add_argument("--model-version", required=True, help="rescore every batch this version wrote")
    p = parsers["replay"]
    p.add_argument("--output", required=True, help="the predictions table holding the batch")
    p.add_argument("--batch-id", required=True, help="the batch to replay")
    for name in ("rollback", "rescore"):
        parsers[name].add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment of the runs")
    for name in ("rollback", "rescore", "replay"):
        parsers[name].add_argument("--dfs-tmpdir", default="", help=DFS_TMPDIR_HELP)
    for p in parsers.values():
        common(p)
