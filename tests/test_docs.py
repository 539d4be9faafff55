"""The README and docs/*.md name only what exists: every ``module.NAME`` of the package, every test
path (``tests/test_x.py``, ``tests/test_x.py::test_name`` and the ``::test_name`` that continues the
last file named) and every relative link (a file, and its ``#heading``) resolves in the tree.

Each reference is a test of its own, named after the page and the reference, so a rename that leaves
a page behind fails by name. A dotted name counts as the package's when it starts with
``diabetes_spark.`` or with one of its modules (``storage.read_table``); it must be defined in the
module it names, or be in that module's ``__all__``. No Spark: modules are imported, test files are
parsed with ``ast``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import diabetes_spark

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = "diabetes_spark"

#: A dotted name that may point into the package: ``storage.read_table``,
#: ``diabetes_spark.errors.error_condition``, ``registry.MlflowLocation.active``. Not preceded by a
#: character that would make it the tail of something else (``mlflow.data.x``, ``tests/features.py``).
_DOTTED = re.compile(r"(?<![\w./:-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
#: A test path, optionally with a test (``::test_x``, ``::TestX::test_y``, ``::test_x[param]``), or
#: the ``::test_x`` continuation that refers to the test file named last.
_TEST_PATH = re.compile(r"(?<![\w/.-])(?:(?P<file>tests/[\w/]+\.py)|(?=::))(?P<names>(?:::\w+)+)?(?:\[[^\]\s`]*\])?")
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.DOTALL)
_CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
#: A relative Markdown link: ``[text](docs/x.md#a-heading)``, ``[text](#a-heading)``.
_LINK = re.compile(r"\]\((?!https?:|mailto:)(?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]+))?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
#: Endings that make a dotted name a file, not an attribute (``params.py``, ``mlflow.db``).
_FILE_ENDINGS = {"py", "md", "txt", "csv", "json", "yml", "yaml", "toml", "db", "log", "whl", "parquet", "png", "jsa"}


@dataclass(frozen=True)
class Reference:
    """One name a page uses: ``kind`` is ``module``, ``test`` or ``link``."""

    page: str
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.text}"


def _modules() -> set[str]:
    """The package's top-level modules and subpackages, as the pages abbreviate them."""
    return {m.name for m in pkgutil.iter_modules(diabetes_spark.__path__)}


def references(page: str, text: str, modules: set[str]) -> list[Reference]:
    """The package names and test paths that ``text`` (a Markdown page) names, and its relative links."""
    found: list[Reference] = []
    for span in _CODE.finditer(text):
        code = span.group(0)
        for match in _DOTTED.finditer(code):
            name = match.group(1)
            parts = name.split(".")
            if parts[-1] in _FILE_ENDINGS:
                continue
            if parts[0] == PACKAGE or parts[0] in modules:
                found.append(Reference(page, "module", name))
    last_file = ""
    for match in _TEST_PATH.finditer(text):
        file, names = match.group("file"), match.group("names") or ""
        if file:
            last_file = file
        elif not names or not last_file:
            continue
        found.append(Reference(page, "test", (file or last_file) + names))
    for match in _LINK.finditer(_CODE_BLOCK.sub("", text)):
        target = match.group("target") + (f"#{match.group('anchor')}" if match.group("anchor") else "")
        found.append(Reference(page, "link", target))
    return list(dict.fromkeys(found))


def missing(reference: Reference, root: Path = ROOT) -> str | None:
    """Why ``reference`` does not resolve in the tree at ``root``, or ``None`` when it does."""
    if reference.kind == "module":
        return _missing_attribute(reference.text)
    if reference.kind == "link":
        return _missing_link(reference, root)
    return _missing_test(reference.text, root)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _missing_link(reference: Reference, root: Path) -> str | None:
    target, _, anchor = reference.text.partition("#")
    page = (root / reference.page).parent / target if target else root / reference.page
    if not page.exists():
        return f"no file {page.relative_to(root).as_posix() if page.is_relative_to(root) else page}"
    if anchor and page.suffix == ".md":
        text = _CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
        if anchor not in {slug(h) for h in _HEADING.findall(text)}:
            return f"{page.name} has no heading #{anchor}"
    return None


def _missing_attribute(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != PACKAGE:
        parts = [PACKAGE, *parts]
    module, depth = None, 0
    for depth in range(len(parts), 0, -1):
        module_name = ".".join(parts[:depth])
        try:
            module = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
                raise  # the module exists but imports something that does not
    if module is None:  # pragma: no cover - the package itself always imports
        return f"no module {parts[0]}"
    target: object = module
    for attribute in parts[depth:]:
        if not hasattr(target, attribute):
            return f"{module.__name__} has no attribute {'.'.join(parts[depth:])}"
        target = getattr(target, attribute)
    if depth == len(parts):
        return None
    home = getattr(target, "__module__", None)
    exported = parts[depth] in getattr(module, "__all__", ())
    if isinstance(home, str) and not exported and not (home + ".").startswith(module.__name__ + "."):
        return f"{'.'.join(parts[depth:])} is defined in {home}, not {module.__name__}: name it there"
    return None


def _missing_test(path: str, root: Path) -> str | None:
    file, *names = path.split("::")
    source = root / file
    if not source.is_file():
        return f"no file {file}"
    body: list[ast.stmt] = ast.parse(source.read_text(encoding="utf-8"), filename=file).body
    for name in names:
        node = next((n for n in body if isinstance(n, _DEFINITIONS) and n.name == name), None)
        if node is None:
            return f"{file} defines no {name}"
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


def _all_references() -> list[Reference]:
    modules = _modules()
    found = []
    for page in PAGES:
        found += references(page.relative_to(ROOT).as_posix(), page.read_text(encoding="utf-8"), modules)
    return found


ALL = _all_references()


@pytest.mark.parametrize("reference", ALL, ids=str)
def test_named_reference_exists(reference: Reference) -> None:
    problem = missing(reference)
    assert problem is None, f"{reference.page} names `{reference.text}`: {problem}"


def test_the_pages_name_modules_and_tests() -> None:
    """The extraction finds every kind on the real pages, so the check above cannot pass on nothing."""
    kinds = {r.kind for r in ALL}
    assert kinds == {"module", "test", "link"}, kinds


def test_the_checker_finds_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def test_there():\n    pass\n\nclass TestK:\n    def test_m(self): ...\n"
    )
    page = (
        "| promise | `tests/test_x.py::test_there[opencensus]`, `::test_gone`, `::TestK::test_m` |\n"
        "`tests/test_nowhere.py` and `errors.error_condition`, `storage.no_such_name`, "
        "`diabetes_spark.errors.NoSuchError`; not ours: `mlflow.spark.log_model`, `params.py`, `spark.ui.enabled`\n"
        "```bash\npython -c 'from diabetes_spark import errors; errors.one_line'\n```\n"
        "[here](docs/a.md#7-where-it-runs), [there](docs/a.md#nowhere), [gone](docs/gone.md), [up](#a-title)\n"
        "# A title\n"
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## 7. Where it `runs`\n")
    (tmp_path / "page.md").write_text(page)
    found = references("page.md", page, {"errors", "storage", "params"})
    assert [r.text for r in found] == [
        "errors.error_condition",
        "storage.no_such_name",
        "diabetes_spark.errors.NoSuchError",
        "errors.one_line",
        "tests/test_x.py::test_there",
        "tests/test_x.py::test_gone",
        "tests/test_x.py::TestK::test_m",
        "tests/test_nowhere.py",
        "docs/a.md#7-where-it-runs",
        "docs/a.md#nowhere",
        "docs/gone.md",
        "#a-title",
    ]
    problems = {r.text: missing(r, tmp_path) for r in found}
    assert problems == {
        "errors.error_condition": None,
        "storage.no_such_name": "diabetes_spark.storage has no attribute no_such_name",
        "diabetes_spark.errors.NoSuchError": "diabetes_spark.errors has no attribute NoSuchError",
        "errors.one_line": None,
        "tests/test_x.py::test_there": None,
        "tests/test_x.py::test_gone": "tests/test_x.py defines no test_gone",
        "tests/test_x.py::TestK::test_m": None,
        "tests/test_nowhere.py": "no file tests/test_nowhere.py",
        "docs/a.md#7-where-it-runs": None,
        "docs/a.md#nowhere": "a.md has no heading #nowhere",
        "docs/gone.md": "no file docs/gone.md",
        "#a-title": None,
    }
