"""``diabetes-spark jobs-json``: the Asset Bundle's jobs as Jobs API 2.1 JSON.

Reads the bundle (``databricks.yml`` + ``resources/*.yml``), substitutes its variables the way the
Databricks CLI does for one target, and writes one ``jobs create`` request body per job, for teams
that create jobs with ``databricks jobs create --json @FILE`` instead of bundles. Both routes read the
same YAML, so the two can never define different jobs.

What the CLI would do at deploy time is done offline: ``${var.*}``, ``${bundle.*}`` and
``${workspace.*}`` references are substituted, ``${resources.experiments.<key>.name}`` becomes that
experiment's substituted name, relative notebook paths become workspace paths, a local wheel glob
(``../dist/*.whl``, in a task's libraries or a serverless environment's dependencies) becomes the
path the CLI uploads the newest matching wheel to, and the target's ``run_as`` and ``permissions``
become each job's ``run_as`` and a ``jobs set-permissions`` body. Every
job and experiment is then checked with the typed models of ``databricks-bundles`` (which reject
unknown fields and wrong types) and every schedule as a Quartz cron expression (no maintained package
checks those).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diabetes_spark.deploy.cron import validate_quartz_cron
from diabetes_spark.deploy.models import check_job_permission, check_job_settings, import_deploy_module
from diabetes_spark.deploy.references import context as _context
from diabetes_spark.deploy.references import substitute as _substitute
from diabetes_spark.deploy.references import target_setting as _target_setting
from diabetes_spark.deploy.uploads import upload_dependencies as _upload_dependencies
from diabetes_spark.deploy.uploads import upload_paths as _upload_paths
from diabetes_spark.deploy.uploads import workspace_notebook as _workspace_notebook
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.params import parse_assignments

__all__ = ["HELP", "add_arguments", "job_permissions", "job_settings", "load_bundle", "run", "write_jobs_json"]

HELP = "write the bundle's jobs as Jobs API 2.1 JSON, one file per job"

#: The resource types jobs-json reads; each entry carries its source file under ``__file__``.
_RESOURCE_TYPES = ("jobs", "experiments")
#: Bundle-level permission level -> job permission level (what the Databricks CLI maps them to).
_JOB_LEVELS = {"CAN_MANAGE": "CAN_MANAGE", "CAN_RUN": "CAN_MANAGE_RUN", "CAN_VIEW": "CAN_VIEW"}
_PRINCIPALS = ("user_name", "group_name", "service_principal_name")


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
    a local wheel (a glob relative to its YAML file, ``../dist/*.whl``) in a task's ``libraries`` or
    an environment's ``dependencies`` becomes ``<artifact_path>/.internal/<newest matching wheel>``,
    where ``bundle deploy`` uploads it; the target's ``run_as`` becomes each job's ``run_as``.

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
        for i, environment in enumerate(spec.get("environments") or []):
            env_spec = environment.get("spec") or {}
            if env_spec.get("dependencies"):
                where = f"job {key!r}.environments[{i}]"
                env_spec["dependencies"] = _upload_dependencies(source, env_spec["dependencies"], context, where=where)
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
        check_job_permission({**principal, "level": _JOB_LEVELS[level]}, where=f"target {target!r}.permissions[{i}]")
        if user is None or user not in principal.values():
            acl.append({**principal, "permission_level": _JOB_LEVELS[level]})
    return acl


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
