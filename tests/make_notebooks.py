"""Regenerate the notebooks' parameter table and widget cell from ``diabetes_spark/params.py``.

Each widget's help text is written once, in the params dataclasses. This script rewrites two
regions of each notebook in ``notebooks/``: the parameter table of the ``%md`` header cell and
the cell of ``dbutils.widgets.text(name, default)`` lines, each under a comment with its help; a
widget with a workspace default (``params.WORKSPACE_DEFAULTS``) takes it on Databricks. The rest is
left as it is.

Usage: ``python tests/make_notebooks.py [--check]``; ``--check`` writes nothing and exits 1 if a
notebook is out of date (``tests/test_notebooks.py`` runs it).
"""

from __future__ import annotations

import json
import re
import string
import sys
from pathlib import Path

from diabetes_spark import params

ROOT = Path(__file__).resolve().parent.parent
#: Notebook file name (as in ``diabetes_spark.notebook.NOTEBOOKS``) -> the params dataclass of its job.
JOB_PARAMS: dict[str, type] = {
    "diabetes_orchestrator_train.py": params.TrainParams,
    "diabetes_orchestrator_batch_score.py": params.ScoreParams,
}
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"
TABLE_MARK = "# MAGIC (generated from diabetes_spark/params.py by tests/make_notebooks.py)"
CELL_MARK = "# Generated from diabetes_spark/params.py by tests/make_notebooks.py: edit the help there."
#: The table, with the marker line above it once it has been generated.
TABLE = re.compile(r"^(?:" + re.escape(TABLE_MARK) + r"\n# MAGIC\n)?(?:# MAGIC \|.*\n)+", re.M)


def _widgets(job_params: type) -> list[tuple[str, str, str]]:
    """(name, default, help with the choices) of every widget, NotebookParams first."""
    rows = [*params.describe(params.NotebookParams), *params.describe(job_params)]
    if [(n, d) for n, d, _, _ in rows] != list(params.notebook_widgets(job_params).items()):
        raise ValueError(f"a {job_params.__name__} field has the name of a NotebookParams field")
    return [(n, d, f"{h} ({', '.join(c)})" if c else h) for n, d, h, c in rows]


#: What the widget cell reads on Databricks to fill in ``params.WORKSPACE_DEFAULTS``.
WORKSPACE_FIELDS = ("user", "catalog", "schema")
#: The widget cell's opening lines, before the declarations: on Databricks, the session's user, catalog and schema.
WORKSPACE_PREAMBLE = (
    "# On Databricks the defaults that only work locally are the workspace's (params.WORKSPACE_DEFAULTS): Unity",
    "# Catalog storage access, an experiment in your folder, a model in the session's catalog and schema.",
    "import os",
    "",
    'workspace = "DATABRICKS_RUNTIME_VERSION" in os.environ',
    "if workspace:",
    '    user, catalog, schema = spark.sql("SELECT current_user(), current_catalog(), current_database()").first()',
)


def _workspace_default(name: str) -> str | None:
    """The Python expression of widget ``name``'s workspace default (an f-string over
    :data:`WORKSPACE_FIELDS` when it has fields), or ``None`` when it has none."""
    if name not in params.WORKSPACE_DEFAULTS:
        return None
    template = params.WORKSPACE_DEFAULTS[name]
    fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    if not fields <= set(WORKSPACE_FIELDS):
        raise ValueError(
            f"WORKSPACE_DEFAULTS[{name!r}] uses {sorted(fields)}; the widget cell reads {WORKSPACE_FIELDS}"
        )
    return ("f" if fields else "") + json.dumps(template)


def table(job_params: type) -> str:
    """The generated header-cell region: marker line, blank line, markdown table."""
    rows = [
        f"# MAGIC | `{name}` | `{default}`{_workspace_note(name)} | {meaning} |"
        for name, default, meaning in _widgets(job_params)
    ]
    head = [TABLE_MARK, "# MAGIC", "# MAGIC | widget | default | meaning |", "# MAGIC |---|---|---|"]
    return "\n".join([*head, *rows]) + "\n"


def _workspace_note(name: str) -> str:
    if name not in params.WORKSPACE_DEFAULTS:
        return ""
    template = params.WORKSPACE_DEFAULTS[name]
    return f" (Databricks: `{template}`)" if template else " (Databricks: empty)"


def widget_cell(job_params: type) -> str:
    """The generated widget-declaration cell, without the blank lines around it: each widget's
    default is its local one, or on Databricks its workspace one where it has one."""
    lines = []
    for name, default, meaning in _widgets(job_params):
        workspace = _workspace_default(name)
        value = json.dumps(default) if workspace is None else f"{workspace} if workspace else {json.dumps(default)}"
        lines.append(f"# {meaning}\ndbutils.widgets.text({json.dumps(name)}, {value})")
    head = ["# Widgets: every parameter, declared once, each under its help.", CELL_MARK, *WORKSPACE_PREAMBLE, ""]
    return "\n".join([*head, *lines])


def render(text: str, job_params: type, name: str = "notebook") -> str:
    """``text`` (a Databricks source notebook) with its two generated regions rewritten.

    Raises:
        ValueError: Not a source notebook, or the table or the widget cell is not found exactly once.
    """
    if not text.startswith(HEADER + "\n"):
        raise ValueError(f"{name}: the first line must be {HEADER!r}")
    cells = text[len(HEADER) :].split(SEPARATOR)
    header, count = TABLE.subn(lambda _: table(job_params), cells[0])
    if count != 1:
        raise ValueError(f"{name}: expected one parameter table in the header cell, found {count}")
    cells[0] = header
    found = [i for i, cell in enumerate(cells) if "dbutils.widgets.text(" in cell]
    if len(found) != 1:
        raise ValueError(f"{name}: expected one cell declaring widgets, found {len(found)}")
    cell = cells[found[0]]
    body = cell.strip("\n")
    start = cell.index(body)
    cells[found[0]] = cell[:start] + widget_cell(job_params) + cell[start + len(body) :]
    return HEADER + SEPARATOR.join(cells)


def out_of_date(notebooks: Path = ROOT / "notebooks", *, write: bool = False) -> list[Path]:
    """The notebooks whose generated regions differ from params.py; rewritten if ``write``."""
    stale = []
    for name, job_params in JOB_PARAMS.items():
        path = notebooks / name
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        new = render(text, job_params, name)
        if new != text:
            stale.append(path)
            if write:
                with open(path, "w", encoding="utf-8", newline="") as f:
                    f.write(new)
    return stale


def main(argv: list[str]) -> int:
    """Rewrite the notebooks, or with ``--check`` only report (exit 1) those out of date."""
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python tests/make_notebooks.py [--check]", file=sys.stderr)
        return 2
    stale = out_of_date(write=not check)
    for path in stale:
        print(f"{'out of date' if check else 'rewrote'}: {path.relative_to(ROOT)}", file=sys.stderr)
    if check and stale:
        print("run `python tests/make_notebooks.py` to regenerate them from diabetes_spark/params.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
