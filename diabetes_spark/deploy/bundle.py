"""``diabetes-spark jobs-json``: the Asset Bundle's jobs as Jobs API 2.1 JSON.

Reads the bundle (``databricks.yml`` + ``resources/*.yml``), substitutes its variables the way the
Databricks CLI does for one target, and writes one ``JobSettings`` JSON file per job, for teams that
create jobs with ``databricks jobs create --json @FILE`` instead of bundles. Both routes read the same
YAML, so the two can never define different jobs.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from diabetes_spark.deploy.cron import validate_quartz_cron
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import parse_assignments

__all__ = ["HELP", "add_arguments", "check_job_settings", "job_settings", "load_bundle", "run", "write_jobs_json"]

HELP = "write the bundle's jobs as Jobs API 2.1 JSON, one file per job"

_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
_NOTEBOOK_SUFFIXES = (".py", ".ipynb", ".sql", ".scala", ".r", ".R")


def load_bundle(root: str | Path = ".") -> dict[str, Any]:
    """Read ``databricks.yml`` and its ``include`` files into one mapping.

    Returns:
        The top-level configuration with ``variables`` and ``resources.jobs`` merged from the included
        files; each job carries its source file under the private key ``__file__``.

    Raises:
        ConfigurationError: No ``databricks.yml``, a job defined twice, or pyyaml not installed.
    """
    try:
        import yaml
    except ImportError as e:
        raise ConfigurationError("reading the bundle needs pyyaml: pip install pyyaml (in the 'test' extra)") from e

    root = Path(root)
    main_file = root / "databricks.yml"
    if not main_file.is_file():
        raise ConfigurationError(
            f"no databricks.yml in {root.resolve()}: run from the repository root, or --bundle-dir"
        )
    config = yaml.safe_load(main_file.read_text(encoding="utf-8")) or {}
    jobs: dict[str, Any] = {}
    files = [main_file] + [p for pattern in config.get("include", []) for p in sorted(root.glob(pattern))]
    for path in files:
        part = config if path == main_file else (yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        if path != main_file:
            config.setdefault("variables", {}).update(part.get("variables", {}))
        for key, job in ((part.get("resources") or {}).get("jobs") or {}).items():
            if key in jobs:
                raise ConfigurationError(f"job {key!r} is defined twice (second time in {path})")
            jobs[key] = {**job, "__file__": str(path.resolve())}
    config["resources"] = {"jobs": jobs}
    config["__root__"] = str(root.resolve())
    return config


def job_settings(
    bundle: Mapping[str, Any],
    target: str,
    *,
    user: str | None = None,
    root_path: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every job of the bundle as a Jobs API 2.1 ``JobSettings`` dict, for one target.

    Variables take their value from ``variables``, else the target, else their default, as the
    Databricks CLI does. Relative notebook paths become workspace paths under the bundle's file path.

    Args:
        bundle: What :func:`load_bundle` returned.
        target: A target of ``databricks.yml`` (``dev``, ``prod``).
        user: The deploying identity, for ``${workspace.current_user.userName}``.
        root_path: The workspace folder the bundle's files live in (default: the target's
            ``workspace.root_path``, else ``~/.bundle/<name>/<target>`` in ``user``'s home).
        variables: Values overriding the bundle variables (``--var name=value``).

    Raises:
        ConfigurationError: An unknown target or variable, a reference with no value, a field the
            Jobs API does not know, or a schedule that is not a Quartz cron expression.
    """
    context = _context(bundle, target, user=user, root_path=root_path, variables=variables or {})
    root = Path(bundle["__root__"])
    out = {}
    for key, job in bundle["resources"]["jobs"].items():
        spec = _substitute({k: v for k, v in job.items() if k != "__file__"}, context, where=f"job {key!r}")
        source = Path(job["__file__"]).parent
        for task in spec.get("tasks", []):
            notebook = task.get("notebook_task")
            if notebook and not str(notebook.get("notebook_path", "/")).startswith("/"):
                notebook["notebook_path"] = _workspace_notebook(root, source, notebook["notebook_path"], context)
        schedule = spec.get("schedule")
        if schedule:
            validate_quartz_cron(schedule.get("quartz_cron_expression", ""))
        check_job_settings(spec, where=f"job {key!r}")
        out[key] = spec
    return out


def _context(
    bundle: Mapping[str, Any], target: str, *, user: str | None, root_path: str | None, variables: Mapping[str, str]
) -> dict[str, str | None]:
    """Name -> value of every reference a job may use (``None``: known but not given)."""
    targets = bundle.get("targets") or {}
    if target not in targets:
        raise ConfigurationError(f"no target {target!r} in databricks.yml; targets: {', '.join(targets)}")
    declared = bundle.get("variables") or {}
    unknown = sorted(set(variables) - set(declared))
    if unknown:
        raise ConfigurationError(f"unknown bundle variable(s) {unknown}; declared: {sorted(declared)}")
    target_config = targets[target] or {}
    if target_config.get("resources"):
        raise ConfigurationError(f"target {target!r} overrides resources: jobs-json supports variables only")
    name = bundle["bundle"]["name"]
    context: dict[str, str | None] = {
        "bundle.name": name,
        "bundle.target": target,
        "workspace.current_user.userName": user,
    }
    for var, spec in declared.items():
        override = (target_config.get("variables") or {}).get(var)
        if isinstance(override, Mapping):
            override = override.get("default")
        value = variables.get(var, override if override is not None else (spec or {}).get("default"))
        context[f"var.{var}"] = None if value is None else str(value)
    workspace = target_config.get("workspace") or {}
    root = root_path or workspace.get("root_path") or f"~/.bundle/{name}/{target}"
    if root.startswith("~/"):
        root = "/Users/${workspace.current_user.userName}" + root[1:]
    context["workspace.root_path"] = root if root.startswith("/Workspace/") else "/Workspace" + root
    context["workspace.file_path"] = workspace.get("file_path") or "${workspace.root_path}/files"
    context["workspace.artifact_path"] = workspace.get("artifact_path") or "${workspace.root_path}/artifacts"
    for _ in range(len(context)):  # values may refer to each other; each round resolves one level
        context = {
            k: None if v is None else _REFERENCE.sub(partial(_lookup, context=context), v) for k, v in context.items()
        }
    return context


def _lookup(match: re.Match[str], *, context: Mapping[str, str | None]) -> str:
    """The value of one ``${name}`` reference, or the reference itself while it has none yet."""
    value = context.get(match.group(1))
    return match.group(0) if value is None else value


def _substitute(value: Any, context: Mapping[str, str | None], *, where: str) -> Any:
    """``value`` with every ``${...}`` replaced (``{{job.id}}``-style references are the Jobs service's)."""
    if isinstance(value, Mapping):
        return {k: _substitute(v, context, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, context, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return copy.deepcopy(value)
    for name in _REFERENCE.findall(value):
        if name not in context:
            raise ConfigurationError(f"{where}: unknown reference ${{{name}}}")
    text = _REFERENCE.sub(partial(_lookup, context=context), value)
    unresolved = _REFERENCE.findall(text)
    if unresolved:
        names = ", ".join("${" + n + "}" for n in unresolved)
        raise ConfigurationError(f"{where}: no value for {names}: {_how_to_set(unresolved)}")
    return text


def _how_to_set(names: Sequence[str]) -> str:
    """What to pass or set to give each reference in ``names`` a value."""
    hints = []
    for name in names:
        if name.startswith("var."):
            hints.append(f"pass --var {name[4:]}=VALUE")
        elif name == "workspace.current_user.userName":
            hints.append("pass --user (the identity that owns and runs the jobs)")
        else:
            hints.append(f"set {name}")
    return "; ".join(dict.fromkeys(hints))


def _workspace_notebook(root: Path, source: Path, relative: str, context: Mapping[str, str | None]) -> str:
    """A notebook path relative to its YAML file, as the workspace path the bundle would deploy it to."""
    local = (source / relative).resolve()
    if not local.is_file():
        raise ConfigurationError(f"notebook {relative!r} (from {source}) does not exist: {local}")
    rel = PurePosixPath(local.relative_to(root).as_posix())
    if rel.suffix in _NOTEBOOK_SUFFIXES:
        rel = rel.with_suffix("")
    return f"{context['workspace.file_path']}/{rel}"


def check_job_settings(spec: Mapping[str, Any], *, where: str = "job") -> Any:
    """Build ``JobSettings`` from ``spec`` and fail on any field the model dropped or changed.

    ``JobSettings.from_dict`` silently ignores unknown keys and unknown enum values, so a typo would
    otherwise pass; comparing ``as_dict()`` with the input key by key catches it.

    Returns:
        The ``databricks.sdk.service.jobs.JobSettings``.

    Raises:
        ConfigurationError: Naming every path whose value did not survive the round trip.
    """
    from databricks.sdk.service.jobs import JobSettings

    settings = JobSettings.from_dict(dict(spec))
    problems = _differences(dict(spec), settings.as_dict(), where)
    if problems:
        raise ConfigurationError("fields the Jobs API 2.1 model does not accept: " + "; ".join(problems))
    return settings


def _differences(given: Any, kept: Any, path: str) -> list[str]:
    """Every path under ``path`` whose value in ``given`` is missing or different in ``kept``."""
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}.{key} (unknown field, or a value not in its enum: {value!r})")
            else:
                out.extend(_differences(value, kept[key], f"{path}.{key}"))
        return out
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        return [p for i, (g, k) in enumerate(zip(given, kept)) for p in _differences(g, k, f"{path}[{i}]")]
    return [] if given == kept else [f"{path} ({given!r} became {kept!r})"]


def write_jobs_json(
    bundle_dir: str | Path,
    target: str,
    out_dir: str | Path,
    *,
    user: str | None = None,
    root_path: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<job key>.json`` (a ``jobs create`` request body) for every job of the bundle.

    Raises:
        ConfigurationError: See :func:`job_settings`.
    """
    jobs = job_settings(load_bundle(bundle_dir), target, user=user, root_path=root_path, variables=variables)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, spec in jobs.items():
        path = out / f"{key}.json"
        path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``jobs-json`` flags to ``parser``."""
    parser.add_argument("--target", default="dev", help="bundle target whose variable values to use (default: dev)")
    parser.add_argument("--out", required=True, help="folder to write <job key>.json into")
    parser.add_argument("--bundle-dir", default=".", help="folder holding databricks.yml (default: .)")
    parser.add_argument("--user", help="identity that owns and runs the jobs (for ${workspace.current_user.userName})")
    parser.add_argument(
        "--root-path", help="workspace folder for files/notebooks and files/dist (default: the bundle's)"
    )
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="set a bundle variable (repeatable)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the JSON files for ``args.target``; return ``{"target": ..., "files": [...]}``.

    Raises:
        ParamError: A ``--var`` that is not ``NAME=VALUE``.
        ConfigurationError: See :func:`job_settings`.
    """
    variables = parse_assignments(args.var, flag="--var")
    paths = write_jobs_json(
        args.bundle_dir, args.target, args.out, user=args.user, root_path=args.root_path, variables=variables
    )
    return {"target": args.target, "files": [str(p) for p in paths]}
