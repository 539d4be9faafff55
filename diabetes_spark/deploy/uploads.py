"""Where ``bundle deploy`` puts a bundle's local files, computed offline: notebooks under
``${workspace.file_path}``, and each local wheel glob as the newest matching wheel under
``${workspace.artifact_path}/.internal``, as the Databricks CLI names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from diabetes_spark.errors import ConfigurationError

__all__ = ["workspace_notebook", "upload_paths"]

_NOTEBOOK_SUFFIXES = (".py", ".ipynb", ".sql", ".scala", ".r", ".R")
#: The folder under ``workspace.artifact_path`` the CLI uploads local libraries to.
_INTERNAL = ".internal"
_WHEEL = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl")


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
