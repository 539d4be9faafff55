"""Offline substitution of a bundle's ``${...}`` references for one target, the way the Databricks
CLI resolves them at deploy time: ``${var.*}`` (argument, else target, else default),
``${bundle.*}``, ``${workspace.*}`` and ``${resources.experiments.<key>.name}``. No maintained
package resolves references inside strings (databricks-bundles resolves only whole ``${var.x}`` values).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from diabetes_spark.deploy.models import check_experiment
from diabetes_spark.errors import ConfigurationError

__all__ = ["REFERENCE", "context", "substitute", "target_setting"]

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")


def target_setting(bundle: Mapping[str, Any], target: str, name: str) -> Any:
    """A top-level setting (``run_as``, ``permissions``) of ``target``, else of the bundle."""
    target_config = (bundle.get("targets") or {}).get(target) or {}
    return target_config.get(name) if target_config.get(name) is not None else bundle.get(name)


def context(
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
            k: None if v is None else REFERENCE.sub(partial(_lookup, context=context), v) for k, v in context.items()
        }
    for key, experiment in bundle["resources"]["experiments"].items():
        spec = substitute(
            {k: v for k, v in experiment.items() if k != "__file__"}, context, where=f"experiment {key!r}"
        )
        check_experiment(spec, where=f"experiment {key!r}")
        context[f"resources.experiments.{key}.name"] = spec["name"]
    return context


def _lookup(match: re.Match[str], *, context: Mapping[str, str | None]) -> str:
    """The value of one ``${name}`` reference, or the reference itself while it has none yet."""
    value = context.get(match.group(1))
    return match.group(0) if value is None else value


def substitute(value: Any, context: Mapping[str, str | None], *, where: str) -> Any:
    """``value`` with every ``${...}`` replaced (``{{job.id}}``-style references are the Jobs service's)."""
    if isinstance(value, Mapping):
        return {k: substitute(v, context, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return copy.deepcopy(value)
    for name in REFERENCE.findall(value):
        if name not in context:
            raise ConfigurationError(f"{where}: unknown reference ${{{name}}}")
    text = REFERENCE.sub(partial(_lookup, context=context), value)
    unresolved = REFERENCE.findall(text)
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
