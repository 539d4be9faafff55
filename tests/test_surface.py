"""The package's surface: every module says what it exports, and no module uses another's
unexported names; the package root is the curated API and imports without Spark."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import diabetes_spark

PACKAGE = Path(diabetes_spark.__file__).parent
MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages([str(PACKAGE)], prefix="diabetes_spark.")
    if name != "diabetes_spark.__main__"
)


def _source(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _uses(module: str) -> list[tuple[str, str, int]]:
    """``(module, name, line)`` for every name this module takes from another module of the package:
    ``from diabetes_spark.x import name`` and ``x.name`` where ``x`` is a package module it imported."""
    tree = ast.parse(_source(module).read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    uses = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("diabetes_spark")
            and node.level == 0
        ):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in MODULES:
                    aliases[alias.asname or alias.name] = target
                else:
                    uses.append((node.module, alias.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            uses.append((aliases[node.value.id], node.attr, node.lineno))
    return [(m, n, line) for m, n, line in uses if m != module]


@pytest.mark.parametrize("module", MODULES)
def test_every_module_lists_what_it_exports_and_each_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    exported = getattr(imported, "__all__", None)
    assert isinstance(exported, list), f"{module} has no __all__ list"
    missing = [name for name in exported if not hasattr(imported, name) and f"{module}.{name}" not in MODULES]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"
    assert len(set(exported)) == len(exported), f"{module}.__all__ repeats a name"


def test_no_module_uses_a_name_another_module_does_not_export() -> None:
    unexported = []
    for module in MODULES:
        for source, name, line in _uses(module):
            exported = getattr(importlib.import_module(source), "__all__", [])
            if name not in exported and name != "__version__":
                unexported.append(f"{_source(module).relative_to(PACKAGE.parent)}:{line} uses {source}.{name}")
    assert not unexported, "names used across modules but not in their module's __all__:\n" + "\n".join(unexported)


def test_the_root_is_the_curated_api_and_imports_without_spark_or_mlflow() -> None:
    probe = (
        "import json, sys, diabetes_spark as d;"
        "heavy = sorted(m for m in ('pyspark', 'mlflow', 'delta', 'opencensus') if m in sys.modules);"
        "print(json.dumps({'heavy': heavy, 'jobs': [callable(getattr(d, n)) for n in ('run_ingest', 'run_training', 'run_batch_scoring')]}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"heavy": [], "jobs": [True, True, True]}
    assert {
        "run_ingest",
        "run_training",
        "run_batch_scoring",
        "TrainParams",
        "ScoreParams",
        "DiabetesSparkError",
    } <= set(diabetes_spark.__all__)
    for name in diabetes_spark.__all__:
        assert getattr(diabetes_spark, name) is not None, name
