"""``diabetes-spark jobs-json``: the Asset Bundle's jobs as Jobs API 2.1 JSON.

Reads the bundle (``databricks.yml`` + ``resources/*.yml``), substitutes its variables the way the
Databricks CLI does for one target, and writes one ``jobs create`` request body per job, for teams
that create jobs with ``databricks jobs create --json @FILE`` instead of bundles. Both routes read the
same YAML, so the two can never define different jobs.

What the CLI would do at deploy time is done offline: ``${var.*}``, ``${bundle.*}`` and
``${workspace.*}`` references are substituted, ``${resources.experiments.<key>.name}`` becomes that
experiment's substituted name, relative notebook paths become workspace paths, a local wheel glob
(``../dist/*.whl``) becomes the path the CLI uploads the newest matching wheel to, and the target's
``run_as`` and ``permissions`` become each job's ``run_as`` and a ``jobs set-permissions`` body. Every
job and experiment is then checked with the typed models of ``databricks-bundles`` (which reject
unknown fields and wrong types) and every schedule as a Quartz cron expression (no maintained package
checks those).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from diabetes_spark.deploy.cron import validate_quartz_cron
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import parse_assignments

__all__ = [
    "DEPLOY_EXTRA",
    "HELP",
    "add_arguments",
    "check_experiment",
    "check_job_settings",
    "import_deploy_module",
    "job_permissions",
    "job_settings",
    "load_bundle",
    "run",
    "write_jobs_json",
]

HELP = "write the bundle's jobs as Jobs API 2.1 JSON, one file per job"

#: How to install what the deploy-time commands need (databricks-sdk, databricks-bundles, pyyaml).
DEPLOY_EXTRA = "pip install 'diabetes_spark[deploy]'"

_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
_NOTEBOOK_SUFFIXES = (".py", ".ipynb", ".sql", ".scala", ".r", ".R")
#: The resource types jobs-json reads; each entry carries its source file under ``__file__``.
_RESOURCE_TYPES = ("jobs", "experiments")
#: Bundle-level permission level -> job permission level (what the Databricks CLI maps them to).
_JOB_LEVELS = {"CAN_MANAGE": "CAN_MANAGE", "CAN_RUN": "CAN_MANAGE_RUN", "CAN_VIEW": "CAN_VIEW"}
_PRINCIPALS = ("user_name", "group_name", "service_principal_name")
#: The folder under ``workspace.artifact_path`` the CLI uploads local libraries to.
_INTERNAL = ".internal"
_WHEEL = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl")


def import_deploy_module(name: str, purpose: str) -> ModuleType:
    """Import ``name``, one of the ``deploy`` extra's packages.

    Raises:
        ConfigurationError: It is not installed; the message says how to install the extra.
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigurationError(f"{purpose} needs {e.name or name}, which is not installed: {DEPLOY_EXTRA}") from e


def load_bundle(root: str | Path = ".") -> dict[str, Any]:
    """Read ``databricks.yml`` and its ``include`` files into one mapping.

    Returns:
        The top-level configuration with ``variables``, ``resources.jobs`` and
        ``resources.experiments`` merged from the included files; each job and experiment carries its
        source file under the private key ``__file__``.

    Raises:
        ConfigurationError: No ``databricks.yml``, a resource defined twice, or pyyaml not installed.
    """
    yaml = import_deploy_module("yaml", "reading the bundle")
    root = Path(root)
    main_file = root / "databricks.yml"
    if not main_file.is_file():
        raise ConfigurationError(
            f"no databricks.yml in {root.resolve()}: run from the repository root, or --bundle-dir"
        )
    config = yaml.safe_load(main_file.read_text(encoding="utf-8")) or {}
    resources: dict[str, dict[str, Any]] = {kind: {} for kind in _RESOURCE_TYPES}
    files = [main_file] + [p for pattern in config.get("include", []) for p in sorted(root.glob(pattern))]
    for path in files:
        part = config if path == main_file else (yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        if path != main_file:
            config.setdefault("variables", {}).update(part.get("variables", {}))
        for kind in _RESOURCE_TYPES:
            for key, spec in ((part.get("resources") or {}).get(kind) or {}).items():
                if key in resources[kind]:
                    raise ConfigurationError(f"{kind[:-1]} {key!r} is defined twice (second time in {path})")
                resources[kind][key] = {**spec, "__file__": str(path.resolve())}
    config["resources"] = resources
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
    Databricks CLI does. Relative notebook paths become workspace paths under the bundle's file path;
    a local wheel (a glob relative to its YAML file, ``../dist/*.whl``) becomes
    ``<artifact_path>/.internal/<newest matching wheel>``, where ``bundle deploy`` uploads it; the
    target's ``run_as`` becomes each job's ``run_as``.

    Args:
        bundle: What :func:`load_bundle` returned.
        target: A target of ``databricks.yml`` (``dev``, ``prod``).
        user: The deploying identity, for ``${workspace.current_user.userName}``.
        root_path: The workspace folder the bundle's files live in (default: the target's
            ``workspace.root_path``, else ``~/.bundle/<name>/<target>`` in ``user``'s home).
        variables: Values overriding the bundle variables (``--var name=value``).

    Raises:
        ConfigurationError: An unknown target or variable, a reference with no value, a field the
            Jobs API model does not accept, no built wheel, or a schedule that is not a Quartz cron
            expression.
    """
    context = _context(bundle, target, user=user, root_path=root_path, variables=variables or {})
    root = Path(bundle["__root__"])
    run_as = _target_setting(bundle, target, "run_as")
    out = {}
    for key, job in bundle["resources"]["jobs"].items():
        spec = _substitute({k: v for k, v in job.items() if k != "__file__"}, context, where=f"job {key!r}")
        source = Path(job["__file__"]).parent
        for task in spec.get("tasks", []):
            notebook = task.get("notebook_task")
            if notebook and not str(notebook.get("notebook_path", "/")).startswith("/"):
                notebook["notebook_path"] = _workspace_notebook(root, source, notebook["notebook_path"], context)
            if task.get("libraries"):
                task["libraries"] = _upload_paths(source, task["libraries"], context, where=f"job {key!r}")
        if run_as and "run_as" not in spec:
            spec["run_as"] = _substitute(run_as, context, where=f"target {target!r}.run_as")
        schedule = spec.get("schedule")
        if schedule:
            validate_quartz_cron(schedule.get("quartz_cron_expression", ""))
        check_job_settings(spec, where=f"job {key!r}")
        out[key] = spec
    return out


def job_permissions(
    bundle: Mapping[str, Any],
    target: str,
    *,
    user: str | None = None,
    root_path: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """The access control list the bundle's ``permissions`` give every job, for one target.

    Bundle-level levels map as the Databricks CLI maps them (``CAN_RUN`` -> ``CAN_MANAGE_RUN``);
    an entry for ``user`` itself is left out, as the CLI leaves out the deploying identity (it owns
    the job). Empty when the target has no permissions.

    Raises:
        ConfigurationError: As :func:`job_settings`, or a level a bundle does not accept.
    """
    context = _context(bundle, target, user=user, root_path=root_path, variables=variables or {})
    entries = _substitute(
        [*(bundle.get("permissions") or []), *(_target_setting(bundle, target, "permissions") or [])],
        context,
        where=f"target {target!r}.permissions",
    )
    jobs = import_deploy_module("databricks.bundles.jobs", "checking the bundle")
    acl = []
    for i, entry in enumerate(entries):
        level = entry.get("level")
        if level not in _JOB_LEVELS:
            raise ConfigurationError(
                f"target {target!r}.permissions[{i}]: level {level!r} is not a bundle permission level "
                f"({', '.join(_JOB_LEVELS)})"
            )
        principal = {k: entry[k] for k in _PRINCIPALS if entry.get(k)}
        if len(principal) != 1:
            raise ConfigurationError(f"target {target!r}.permissions[{i}] must name exactly one of {_PRINCIPALS}")
        try:
            jobs.JobPermission.from_dict({**principal, "level": _JOB_LEVELS[level]})
        except (ValueError, TypeError) as e:
            raise ConfigurationError(f"target {target!r}.permissions[{i}]: {e}") from e
        if user is None or user not in principal.values():
            acl.append({**principal, "permission_level": _JOB_LEVELS[level]})
    return acl


def _target_setting(bundle: Mapping[str, Any], target: str, name: str) -> Any:
    """A top-level setting (``run_as``, ``permissions``) of ``target``, else of the bundle."""
    target_config = (bundle.get("targets") or {}).get(target) or {}
    return target_config.get(name) if target_config.get(name) is not None else bundle.get(name)


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
    for key, experiment in bundle["resources"]["experiments"].items():
        spec = _substitute(
            {k: v for k, v in experiment.items() if k != "__file__"}, context, where=f"experiment {key!r}"
        )
        check_experiment(spec, where=f"experiment {key!r}")
        context[f"resources.experiments.{key}.name"] = spec["name"]
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
            hints.append("pass --user (the identity that deploys and owns the jobs)")
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


def _is_local(path: str) -> bool:
    """Whether a library path names a local file (relative), not a workspace, volume or remote one."""
    return not path.startswith("/") and ":" not in path


def _upload_paths(
    source: Path, libraries: list[dict[str, Any]], context: Mapping[str, str | None], *, where: str
) -> list[dict[str, Any]]:
    """``libraries`` with each local ``whl``/``jar`` glob replaced by the uploaded files the CLI would name.

    As ``bundle deploy`` does: the glob is relative to the YAML file, it must match a file, only the
    newest version of each wheel's distribution is kept, and each file is named by its upload path
    ``<artifact_path>/.internal/<file name>``.
    """
    out = []
    for library in libraries:
        kind = next((k for k in ("whl", "jar") if k in library), None)
        if kind is None or not _is_local(str(library[kind])):
            out.append(library)
            continue
        pattern = str(library[kind])
        matches = sorted(p for p in source.glob(pattern) if p.is_file())
        if not matches:
            raise ConfigurationError(
                f"{where}: no file matches {pattern!r} (relative to {source}): build the wheel first "
                "(python -m build --wheel --outdir dist .)"
            )
        for path in _newest_wheels(matches) if kind == "whl" else matches:
            out.append({**library, kind: f"{context['workspace.artifact_path']}/{_INTERNAL}/{path.name}"})
    return out


def _newest_wheels(paths: Sequence[Path]) -> list[Path]:
    """For each distribution among ``paths``, its wheel of the highest version (others kept as they are)."""
    best: dict[str, Path] = {}
    out: list[Path] = []
    for path in paths:
        match = _WHEEL.fullmatch(path.name)
        if not match:
            out.append(path)
            continue
        name = match["name"]
        if name not in best:
            best[name] = path
            out.append(path)
        elif _version_key(match["version"]) > _version_key(_WHEEL.fullmatch(best[name].name)["version"]):
            out[out.index(best[name])] = path
            best[name] = path
    return out


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """A version's numeric chunks compared as numbers, other chunks as text (the CLI's heuristic)."""
    return tuple((0, int(c), "") if c.isdigit() else (1, 0, c) for c in re.findall(r"\d+|\D+", version))


def check_job_settings(spec: Mapping[str, Any], *, where: str = "job") -> Any:
    """Check ``spec`` with ``databricks-bundles``' typed job model.

    ``databricks.bundles.jobs.Job.from_dict`` rejects unknown fields (``Unexpected field ...``),
    values outside an enum and values of the wrong type; databricks-sdk's ``JobSettings.from_dict``
    would silently drop them.

    Returns:
        The ``databricks.bundles.jobs.Job``.

    Raises:
        ConfigurationError: Naming ``where`` and what the model rejected.
    """
    jobs = import_deploy_module("databricks.bundles.jobs", "checking the bundle")
    try:
        return jobs.Job.from_dict(copy.deepcopy(dict(spec)))
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"{where} is not a valid job: {e}") from e


def check_experiment(spec: Mapping[str, Any], *, where: str = "experiment") -> Any:
    """Check ``spec`` with ``databricks-bundles``' typed MLflow experiment model.

    Returns:
        The ``databricks.bundles.experiments.MlflowExperiment``.

    Raises:
        ConfigurationError: Naming ``where`` and what the model rejected.
    """
    experiments = import_deploy_module("databricks.bundles.experiments", "checking the bundle")
    try:
        return experiments.MlflowExperiment.from_dict(copy.deepcopy(dict(spec)))
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"{where} is not a valid MLflow experiment: {e}") from e


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

    With target permissions, also ``<out_dir>/<job key>.permissions.json``, the body of
    ``databricks jobs set-permissions <job id> --json @FILE``.

    Raises:
        ConfigurationError: See :func:`job_settings` and :func:`job_permissions`.
    """
    bundle = load_bundle(bundle_dir)
    options: dict[str, Any] = {"user": user, "root_path": root_path, "variables": variables}
    jobs = job_settings(bundle, target, **options)
    acl = job_permissions(bundle, target, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, spec in jobs.items():
        bodies = {f"{key}.json": spec, **({f"{key}.permissions.json": {"access_control_list": acl}} if acl else {})}
        for name, body in bodies.items():
            path = out / name
            path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``jobs-json`` flags to ``parser``."""
    parser.add_argument("--target", default="dev", help="bundle target whose variable values to use (default: dev)")
    parser.add_argument(
        "--out", required=True, help="folder to write <job key>.json (and <job key>.permissions.json) into"
    )
    parser.add_argument("--bundle-dir", default=".", help="folder holding databricks.yml (default: .)")
    parser.add_argument(
        "--user", help="identity that creates and owns the jobs (for ${workspace.current_user.userName})"
    )
    parser.add_argument(
        "--root-path",
        help="workspace folder for files/notebooks and artifacts/.internal (the wheel); default: the bundle's",
    )
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="set a bundle variable (repeatable)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the JSON files for ``args.target``; return ``{"target": ..., "files": [...]}``.

    Raises:
        ParamError: A ``--var`` that is not ``NAME=VALUE``.
        ConfigurationError: See :func:`job_settings`; also when pyyaml or databricks-bundles is not
            installed (``pip install 'diabetes_spark[deploy]'``).
    """
    variables = parse_assignments(args.var, flag="--var")
    paths = write_jobs_json(
        args.bundle_dir, args.target, args.out, user=args.user, root_path=args.root_path, variables=variables
    )
    return {"target": args.target, "files": [str(p) for p in paths]}
