"""Deploying to Databricks: the secret scope, and the Asset Bundle's jobs as Jobs API 2.1 JSON.

``setup-secrets`` (``diabetes-spark setup-secrets --scope NAME``) creates the secret scope if it is
missing and puts the App Insights connection string and the ADLS Gen2 account name, container name and
key, read from the environment (:data:`SECRET_ENVIRONMENT`) or prompted for without echo. It reports
key names, never values.

``jobs-json`` (``python -m diabetes_spark.deploy jobs-json --target dev --out DIR``) reads the bundle
(``databricks.yml`` + ``resources/*.yml``), substitutes its variables the way the Databricks CLI does
for one target, and writes one Jobs API 2.1 ``JobSettings`` JSON file per job, for teams that create
jobs with ``databricks jobs create --json @FILE`` instead of bundles. Both routes read the same YAML.
"""

from __future__ import annotations

import argparse
import copy
import getpass
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from diabetes_spark import params
from diabetes_spark.errors import ConfigurationError

__all__ = [
    "SECRET_ENVIRONMENT",
    "add_setup_secrets_arguments",
    "run_setup_secrets",
    "load_bundle",
    "job_settings",
    "check_job_settings",
    "validate_quartz_cron",
    "write_jobs_json",
    "main",
]

_log = logging.getLogger(__name__)

#: NotebookParams field naming a secret key -> (environment variable holding its value, what it is).
SECRET_ENVIRONMENT: dict[str, tuple[str, str]] = {
    "appinsights_secret": ("APPLICATIONINSIGHTS_CONNECTION_STRING", "Application Insights connection string"),
    "storage_account_secret": ("ADLS_ACCOUNT_NAME", "ADLS Gen2 storage account name"),
    "storage_container_secret": ("ADLS_CONTAINER_NAME", "ADLS Gen2 container name"),
    "storage_key_secret": ("ADLS_ACCOUNT_KEY", "ADLS Gen2 storage account key"),
}
_STORAGE_FIELDS = ("storage_account_secret", "storage_container_secret", "storage_key_secret")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")  # secret scope and key names (Secrets API rule)
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CONNECTION = re.compile(rf"{_GUID}|(.*;)?\s*InstrumentationKey\s*=\s*{_GUID}\s*(;.*)?", re.IGNORECASE)
DEFAULT_TIMEOUT_SECONDS = 30.0


# --------------------------------------------------------------------------------------------------
# setup-secrets


def add_setup_secrets_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``setup-secrets`` flags to ``parser`` (key-name defaults come from ``NotebookParams``)."""
    parser.add_argument("--scope", required=True, help="secret scope to create if missing and fill")
    parser.add_argument("--host", help="workspace URL (default: $DATABRICKS_HOST or the profile's host)")
    parser.add_argument("--profile", help="~/.databrickscfg profile to sign in with (default: $DATABRICKS_CONFIG_PROFILE)")
    for name, default, help_text, _ in params.describe(params.NotebookParams):
        if name in SECRET_ENVIRONMENT:
            env = SECRET_ENVIRONMENT[name][0]
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=default,
                help=f"{help_text}; value from ${env} or a prompt (default key: {default!r}; '' skips it)",
            )
    parser.add_argument(
        "--no-prompt", action="store_true", help="fail instead of prompting when a value's environment variable is unset"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to keep trying to reach the workspace (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )


def run_setup_secrets(args: argparse.Namespace) -> dict[str, Any]:
    """Create the secret scope if missing and put the secrets; return a summary without values.

    Args:
        args: ``scope``, ``host``, ``profile``, ``no_prompt``, ``timeout`` and one secret key name
            per :data:`SECRET_ENVIRONMENT` field (as built by :func:`add_setup_secrets_arguments`).

    Returns:
        ``scope``, ``host``, ``scope_created``, ``keys`` (secret key names put) and ``sources``
        (key name -> ``environment`` or ``prompt``).

    Raises:
        ConfigurationError: A bad scope or key name, a value missing with ``--no-prompt`` (or with no
            terminal to prompt on), an implausible value, or no workspace reachable or authorised.
    """
    scope = _check_name("scope", args.scope)
    wanted = _wanted_keys(args)
    values = {field: os.environ.get(SECRET_ENVIRONMENT[field][0], "").strip() for field in wanted}
    missing = [SECRET_ENVIRONMENT[f][0] for f in wanted if not values[f]]
    if missing and args.no_prompt:
        raise ConfigurationError(f"--no-prompt and no value in {', '.join(missing)}: set them or drop --no-prompt")
    if missing and not sys.stdin.isatty():
        raise ConfigurationError(f"no value in {', '.join(missing)} and no terminal to prompt on: set them")

    # Reach the workspace before prompting: nobody should type a key into a command that cannot store it.
    client = _workspace_client(args)
    host = client.config.host
    existing = {s.name for s in _call(host, "list the secret scopes", (), lambda: list(client.secrets.list_scopes()))}

    sources = {f: "environment" for f in wanted if values[f]}
    for field in wanted:
        if not values[field]:
            env, what = SECRET_ENVIRONMENT[field]
            values[field] = getpass.getpass(f"{what} (not echoed; set {env} to skip this prompt): ").strip()
            sources[field] = "prompt"
    _check_values(values)

    created = scope not in existing
    if created:
        created = _create_scope(client, host, scope)
    secrets = list(values.values())
    for field, key in wanted.items():
        _call(host, f"put secret {key!r} in scope {scope!r}", secrets, client.secrets.put_secret, scope, key,
              string_value=values[field])
        _log.info("put secret %s in scope %s", key, scope)
    return {
        "scope": scope,
        "host": host,
        "scope_created": created,
        "keys": list(wanted.values()),
        "sources": {wanted[f]: sources[f] for f in wanted},
    }


def _wanted_keys(args: argparse.Namespace) -> dict[str, str]:
    """Field -> secret key name for every secret to put (an empty key name skips it; no account, no storage)."""
    names = {f: (getattr(args, f, None) or "").strip() for f in SECRET_ENVIRONMENT}
    if not names["storage_account_secret"]:
        names.update({f: "" for f in _STORAGE_FIELDS})
    wanted = {f: _check_name(f"--{f.replace('_', '-')}", key) for f, key in names.items() if key}
    if not wanted:
        raise ConfigurationError("every secret key name is empty: nothing to put")
    return wanted


def _check_name(what: str, name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ConfigurationError(f"{what} must be 1-128 letters, digits, '.', '_' or '-'; got {name!r}")
    return name


def _check_values(values: Mapping[str, str]) -> None:
    """Plausibility checks whose messages never repeat a value."""
    for field, value in values.items():
        env, what = SECRET_ENVIRONMENT[field]
        if not value:
            raise ConfigurationError(f"the {what} is empty: set {env} or type it at the prompt")
    connection = values.get("appinsights_secret")
    if connection is not None and not _CONNECTION.fullmatch(connection):
        raise ConfigurationError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING is neither a connection string with an InstrumentationKey nor a "
            "bare instrumentation key: copy it from the Application Insights resource's overview"
        )
    account = values.get("storage_account_secret")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise ConfigurationError("ADLS_ACCOUNT_NAME is not a storage account name (3-24 lowercase letters and digits)")
    container = values.get("storage_container_secret")
    if container is not None and not _CONTAINER.fullmatch(container):
        raise ConfigurationError(
            "ADLS_CONTAINER_NAME is not a container name (3-63 lowercase letters, digits and single hyphens)"
        )


def _workspace_client(args: argparse.Namespace) -> Any:
    """A ``WorkspaceClient`` with a bounded retry budget, auth from flags, environment or profile."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    timeout = max(float(args.timeout), 1.0)
    kwargs: dict[str, Any] = {"http_timeout_seconds": timeout, "retry_timeout_seconds": int(timeout)}
    if args.host:
        kwargs["host"] = args.host
    if args.profile:
        kwargs["profile"] = args.profile
    try:
        return WorkspaceClient(config=Config(**kwargs))
    except ValueError as e:  # the SDK's way of saying: no host, or no usable credentials
        reason = re.split(r", please check|\. Config:", _first_line(e))[0]
        raise ConfigurationError(
            f"no Databricks workspace configured ({reason}): set DATABRICKS_HOST and DATABRICKS_TOKEN, "
            "or pass --host / --profile"
        ) from e


def _create_scope(client: Any, host: str, scope: str) -> bool:
    """Create the scope; ``False`` when someone created it in the meantime."""
    from databricks.sdk.errors import ResourceAlreadyExists

    try:
        client.secrets.create_scope(scope)
    except ResourceAlreadyExists:
        return False
    except Exception as e:  # mapped like every other call
        _raise_unreachable(host, f"create secret scope {scope!r}", e, [])
    _log.info("created secret scope %s", scope)
    return True


def _call(host: str, what: str, secrets: Sequence[str], function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, its SDK, HTTP and retry-timeout errors made one clear message."""
    try:
        return function(*args, **kwargs)
    except Exception as e:  # re-raised below, as a ConfigurationError or unchanged
        _raise_unreachable(host, what, e, secrets)


def _raise_unreachable(host: str, what: str, error: BaseException, secrets: Sequence[str]) -> NoReturn:
    """Turn an SDK, network or retry-timeout error into a :class:`ConfigurationError`."""
    import requests
    from databricks.sdk.errors import DatabricksError, PermissionDenied, Unauthenticated

    cause = error.__cause__ if isinstance(error, TimeoutError) and error.__cause__ else error
    if isinstance(cause, (Unauthenticated, PermissionDenied)):
        message = (
            f"the Databricks workspace at {host} refused to {what} ({_scrub(_first_line(cause), secrets)}): "
            "check DATABRICKS_TOKEN / the profile, and that you may manage secret scopes"
        )
    elif isinstance(cause, DatabricksError):
        message = f"the Databricks workspace at {host} could not {what}: {_scrub(_first_line(cause), secrets)}"
    elif isinstance(cause, (requests.RequestException, TimeoutError, OSError)):
        message = (
            f"cannot reach the Databricks workspace at {host} ({_network_reason(cause)}): check DATABRICKS_HOST "
            "or --host, and the network"
        )
    else:
        raise error
    raise ConfigurationError(message) from error


def _network_reason(error: BaseException) -> str:
    text = str(error)
    for needle, reason in (
        ("refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("getaddrinfo", "host name not found"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return type(error).__name__


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --------------------------------------------------------------------------------------------------
# The bundle, read as Jobs API 2.1 settings

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
        raise ConfigurationError(f"no databricks.yml in {root.resolve()}: run from the repository root, or --bundle-dir")
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
        context = {k: None if v is None else _REFERENCE.sub(partial(_lookup, context=context), v) for k, v in context.items()}
    return context


def _lookup(match: re.Match[str], *, context: Mapping[str, str | None]) -> str:
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


# --------------------------------------------------------------------------------------------------
# Quartz cron

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = (
    ("seconds", 0, 59, ()),
    ("minutes", 0, 59, ()),
    ("hours", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2099, ()),
)
_DOM_SPECIAL = re.compile(r"L(-([1-9]|[12][0-9]|30))?|LW|([1-9]|[12][0-9]|3[01])W")
_DOW_SPECIAL = re.compile(r"([1-7]|" + "|".join(_DAYS) + r")(L|#[1-5])|L", re.IGNORECASE)


def validate_quartz_cron(expression: str) -> None:
    """Check a Quartz cron expression as the Jobs scheduler reads it.

    Six or seven fields (seconds, minutes, hours, day-of-month, month, day-of-week, optional year);
    lists, ranges, ``*``, steps, month and day names, and exactly one of day-of-month and
    day-of-week is ``?``; ``L``, ``W`` and ``#`` where Quartz allows them.

    Raises:
        ConfigurationError: Naming the field that is wrong.
    """
    fields = str(expression).split()
    if len(fields) not in (6, 7):
        raise ConfigurationError(
            f"a Quartz cron expression has 6 or 7 fields (seconds minutes hours day-of-month month day-of-week "
            f"[year]); {expression!r} has {len(fields)}"
        )
    if (fields[3] == "?") == (fields[5] == "?"):
        raise ConfigurationError(f"exactly one of day-of-month and day-of-week must be '?' in {expression!r}")
    for text, (name, low, high, names) in zip(fields, _FIELDS):
        if text == "?" and name in ("day-of-month", "day-of-week"):
            continue
        for item in text.split(","):
            if (name == "day-of-month" and _DOM_SPECIAL.fullmatch(item)) or (
                name == "day-of-week" and _DOW_SPECIAL.fullmatch(item)
            ):
                continue
            if not _cron_item_ok(item, low, high, names):
                raise ConfigurationError(f"bad {name} field {text!r} in Quartz cron expression {expression!r}")


def _cron_item_ok(item: str, low: int, high: int, names: Sequence[str]) -> bool:
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return False
    if base == "*":
        return True
    bounds = base.split("-")
    if len(bounds) > 2:
        return False
    return all(_cron_value(b, low, high, names) is not None for b in bounds)


def _cron_value(text: str, low: int, high: int, names: Sequence[str]) -> int | None:
    if text.isdigit():
        return int(text) if low <= int(text) <= high else None
    upper = text.upper()
    return names.index(upper) + low if upper in names else None


# --------------------------------------------------------------------------------------------------
# python -m diabetes_spark.deploy


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diabetes_spark.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("jobs-json", help="write the bundle's jobs as Jobs API 2.1 JSON, one file per job")
    p.add_argument("--target", default="dev", help="bundle target whose variable values to use (default: dev)")
    p.add_argument("--out", required=True, help="folder to write <job key>.json into")
    p.add_argument("--bundle-dir", default=".", help="folder holding databricks.yml (default: .)")
    p.add_argument("--user", help="identity that owns and runs the jobs (for ${workspace.current_user.userName})")
    p.add_argument("--root-path", help="workspace folder for files/notebooks and files/dist (default: the bundle's)")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="set a bundle variable (repeatable)")
    p = sub.add_parser("setup-secrets", help="create the secret scope and put the project's secrets")
    add_setup_secrets_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diabetes_spark.deploy jobs-json|setup-secrets``: print a JSON summary, return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "setup-secrets":
            summary = run_setup_secrets(args)
        else:
            variables = dict(_split_assignment(v) for v in args.var)
            paths = write_jobs_json(
                args.bundle_dir, args.target, args.out, user=args.user, root_path=args.root_path, variables=variables
            )
            summary = {"target": args.target, "files": [str(p) for p in paths]}
    except ConfigurationError as e:
        print(f"{_parser().prog} {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _split_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ConfigurationError(f"--var wants NAME=VALUE; got {text!r}")
    return name, value


if __name__ == "__main__":
    sys.exit(main())
