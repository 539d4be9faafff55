"""The package's shape: the root's ``__all__`` is the public surface, pinned here; the root imports
without Spark; the import graph (function-level imports included) has no circle, and only the faces
and the jobs import the session module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import diabetes_spark

PACKAGE = Path(diabetes_spark.__file__).parent
#: The modules that may import :mod:`diabetes_spark.session`: the faces and the jobs.
SESSION_USERS = {
    "diabetes_spark.cli",
    "diabetes_spark.commands",
    "diabetes_spark.notebook",
    "diabetes_spark.connect_server",
}

PUBLIC_API = [
    "ConfigurationError",
    "DiabetesSparkError",
    "IngestParams",
    "InputError",
    "NotebookError",
    "NotebookParams",
    "OutputError",
    "ParamError",
    "ReconciliationError",
    "RegistryError",
    "RejectThresholdError",
    "SchemaError",
    "ScoreParams",
    "TrainParams",
    "TrainingError",
    "WriteConflictError",
    "__version__",
    "run_batch_scoring",
    "run_ingest",
    "run_training",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports anywhere in its body (``from x import y`` counts
    ``x.y`` when that is a module, else ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "") in MODULES:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                found.add(target if target in MODULES else node.module)
    found.discard(module)
    return {name for name in found if name != "diabetes_spark"}  # the root only re-exports


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph``, or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node], _ = 1, stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node], _ = 2, stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_root_all_is_the_public_surface() -> None:
    assert sorted(diabetes_spark.__all__) == PUBLIC_API


def test_the_root_imports_without_spark_or_mlflow_and_its_names_resolve() -> None:
    probe = (
        "import json, sys, diabetes_spark as d;"
        "heavy = sorted(m for m in ('pyspark', 'mlflow', 'delta', 'opencensus', 'opentelemetry') if m in sys.modules);"
        "names = [n for n in d.__all__ if getattr(d, n, None) is None];"
        "print(json.dumps({'heavy': heavy, 'unresolved': names}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"heavy": [], "unresolved": []}


def test_the_import_graph_has_no_circle_and_only_faces_and_jobs_import_the_session() -> None:
    graph = {module: _imports(module) for module in MODULES}
    assert _cycle(graph) == []
    jobs = {m for m in MODULES if m == "diabetes_spark.jobs" or m.startswith("diabetes_spark.jobs.")}
    importers = {m for m, targets in graph.items() if "diabetes_spark.session" in targets}
    assert importers <= SESSION_USERS | jobs | {"diabetes_spark.__main__"}, importers - SESSION_USERS - jobs


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
