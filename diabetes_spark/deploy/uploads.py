"""Where ``bundle deploy`` puts a bundle's local files, computed offline: notebooks under
``${workspace.file_path}``, and each local wheel glob (a task library, or a dependency of a job's
serverless environment) as the newest matching wheel under ``${workspace.artifact_path}/.internal``,
as the Databricks CLI names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from diabetes_spark.errors import ConfigurationError

__all__ = ["workspace_notebook", "upload_paths", "upload_dependencies"]

_NOTEBOOK_SUFFIXES = (".py", ".ipynb", ".sql", ".scala", ".r", ".R")
#: The folder under ``workspace.artifact_path`` the CLI uploads local libraries to.
_INTERNAL = ".internal"
_WHEEL = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl")
#: A pip option (``-r file``, ``--index-url URL``, ``-e``): never a file to upload.
_PIP_FLAG = re.compile(r"(^|\s+)--?[a-zA-Z0-9-]+([\s=]+|$)")
#: A requirement by name (PEP 440 versions), ``name[extras] >=1.0,<2``: installed from an index, not uploaded.
_VERSION = r"(\d+!)?\d+(\.\d+)*([-_.]?(a|b|rc)\d+)?([-_.]?post\d+)?([-_.]?dev\d+)?(\+[a-zA-Z0-9]+([-_.][a-zA-Z0-9]+)*)?"
_REQUIREMENT = re.compile(rf"[a-zA-Z0-9\-_]+\s?(\[.*\])?\s?((==|!=|<=|>=|~=|>|<)\s?{_VERSION},?)*")
#: Pip extras after a wheel path (``dist/x.whl[train]``), split off before globbing and put back after.
_WHEEL_EXTRAS = re.compile(r"(?i)\.whl(\[[^\]]*\])$")


def workspace_notebook(root: Path, source: Path, relative: str, context: Mapping[str, str | None]) -> str:
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


def upload_paths(
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
        for path in _uploaded(source, str(library[kind]), context, where=where, newest=kind == "whl"):
            out.append({**library, kind: path})
    return out


def _is_local_dependency(dependency: str) -> bool:
    """Whether an environment dependency names a local file, as the CLI decides it: ``.``-prefixed paths
    are; pip options and requirements by name are not; else any relative path without a scheme."""
    if not dependency:
        return False
    if dependency.startswith("."):
        return True
    if _PIP_FLAG.search(dependency) or _REQUIREMENT.fullmatch(dependency):
        return False
    return _is_local(dependency.strip("\"'"))


def upload_dependencies(
    source: Path, dependencies: list[str], context: Mapping[str, str | None], *, where: str
) -> list[str]:
    """A serverless environment's ``dependencies`` with each local glob replaced by the uploaded files.

    As ``bundle deploy`` does for ``environments[].spec.dependencies``, exactly as for task libraries
    (:func:`upload_paths`): the same glob, newest-wheel rule and upload path, with any pip extras
    (``.whl[train]``) kept on the rewritten path. Requirements by name, pip options and remote paths
    (``/Volumes/...``, ``/Workspace/...``, URLs) are left as they are.
    """
    out = []
    for dependency in dependencies:
        if not _is_local_dependency(dependency):
            out.append(dependency)
            continue
        extras = _WHEEL_EXTRAS.search(dependency)
        pattern = dependency[: extras.start(1)] if extras else dependency
        suffix = extras.group(1) if extras else ""
        out.extend(f"{path}{suffix}" for path in _uploaded(source, pattern, context, where=where, newest=True))
    return out


def _uploaded(source: Path, pattern: str, context: Mapping[str, str | None], *, where: str, newest: bool) -> list[str]:
    """The upload paths of the files ``pattern`` (relative to ``source``) matches; an error if none does."""
    matches = sorted(p for p in source.glob(pattern) if p.is_file())
    if not matches:
        raise ConfigurationError(
            f"{where}: no file matches {pattern!r} (relative to {source}): build the wheel first "
            "(python -m build --wheel --outdir dist .)"
        )
    return [
        f"{context['workspace.artifact_path']}/{_INTERNAL}/{p.name}"
        for p in (_newest_wheels(matches) if newest else matches)
    ]


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
