"""What the two Databricks notebooks share, and a runner for them off Databricks.

:class:`NotebookContext` turns widgets into params objects, reads the secret scope (ADLS Gen2
access: none when Unity Catalog grants it, else OAuth or the account key into the Spark conf; the
App Insights connection string into telemetry) and resolves table references relative to the ADLS
container root. :func:`run_notebook` executes a Databricks source-format notebook cell by cell with
``spark`` and a ``dbutils`` stand-in (``%pip`` cells are skipped: the package is installed
already); :mod:`diabetes_spark.demo` runs the whole loop through both.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from diabetes_spark import adls, storage, telemetry
from diabetes_spark import params as job_params
from diabetes_spark.errors import ConfigurationError, NotebookError, ParamError, one_line
from diabetes_spark.local_dbutils import LocalDbutils, NotebookExit, runner_secrets

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


_log = logging.getLogger(__name__)
P = TypeVar("P")

#: Params fields that hold table references (resolved relative to the ADLS container root).
TABLE_FIELDS = ("training_data", "input", "output", "rejects", "source", "table")
NOTEBOOKS = {"train": "diabetes_orchestrator_train.py", "score": "diabetes_orchestrator_batch_score.py"}
_HEADER = "# Databricks notebook source"
_SEPARATOR = "# COMMAND ----------"


def _secret(dbutils: Any, scope: str, key: str) -> str:
    """A required secret, or a :class:`ConfigurationError` naming scope and key."""
    try:
        value = dbutils.secrets.get(scope=scope, key=key)
    except Exception as e:  # Databricks raises a py4j error, LocalDbutils a KeyError
        raise ConfigurationError(
            f"secret {key!r} is missing from secret scope {scope!r}: {one_line(e, 300)}. "
            "Create it with 'diabetes-spark setup-secrets', or empty the widget that names it."
        ) from e
    if not value:
        raise ConfigurationError(f"secret {key!r} in scope {scope!r} is empty")
    return value


def _optional_secret(dbutils: Any, scope: str, key: str) -> str | None:
    """An optional secret: ``None`` when the key is empty or the secret does not exist."""
    if not key:
        return None
    try:
        return dbutils.secrets.get(scope=scope, key=key) or None
    except Exception:  # a missing telemetry secret means console-only telemetry, by design
        _log.info("no secret %r in scope %r: telemetry goes to the console only", key, scope)
        return None


def _widget(dbutils: Any, name: str) -> str:
    """A job widget read before the job's params are (telemetry starts first): "" if not declared."""
    try:
        return dbutils.widgets.get(name) or ""
    except Exception:  # a notebook without the widget: the default
        return ""


@dataclass
class NotebookContext:
    """A notebook run's settings, secrets-derived configuration and telemetry."""

    spark: Any
    dbutils: Any
    settings: job_params.NotebookParams
    telemetry: Any
    storage_root: str | None = None
    secret_values: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def open(cls, spark: SparkSession, dbutils: Any, *, component: str) -> NotebookContext:
        """Read the notebook widgets and secrets, configure ADLS Gen2 and start telemetry.

        Raises:
            ParamError: A widget has a bad value.
            ConfigurationError: A required secret is missing or a connection string is invalid.
        """
        names = job_params.widget_defaults(job_params.NotebookParams)
        settings = job_params.from_strings(job_params.NotebookParams, {n: dbutils.widgets.get(n) for n in names})
        scope = settings.secret_scope
        secret_values: list[str] = []
        root = None
        if settings.storage_account_secret:
            account = _secret(dbutils, scope, settings.storage_account_secret)
            root = adls.abfss_uri(account, _secret(dbutils, scope, settings.storage_container_secret))
            if settings.storage_client_id_secret:  # a service principal, for this account only
                client_id, client_secret, tenant = (
                    _secret(dbutils, scope, name)
                    for name in (
                        settings.storage_client_id_secret,
                        settings.storage_client_secret_secret,
                        settings.storage_tenant_id_secret,
                    )
                )
                secret_values.append(client_secret)
                adls.configure_adls_oauth(
                    spark, account, client_id=client_id, client_secret=client_secret, tenant=tenant
                )
            elif settings.storage_key_secret:  # the shared account key, the legacy way
                key = _secret(dbutils, scope, settings.storage_key_secret)
                secret_values.append(key)
                adls.configure_adls(spark, account, key)
            # else: Unity Catalog grants the access (an external location): no Spark setting at all
        connection = _optional_secret(dbutils, scope, settings.appinsights_secret)
        if connection:
            secret_values.append(connection)
        dimensions = {
            name: value
            for name, value in (
                ("databricks_job_id", settings.databricks_job_id),
                ("databricks_run_id", settings.databricks_run_id),
            )
            if value
        }
        tel = telemetry.start(
            component,
            connection_string=connection,
            secrets=secret_values,
            dimensions=dimensions,
            backend=_widget(dbutils, "telemetry_backend"),
        )
        if root:
            tel.logger().info("ADLS Gen2 container root: %s", root)
        return cls(spark, dbutils, settings, tel, root, secret_values)

    def params(self, cls: type[P]) -> P:
        """The job's params from the widgets, table references resolved against the container root.
        A bad value is logged to telemetry, which is then closed (the notebook fails on it)."""
        names = job_params.widget_defaults(cls)
        values = {n: self.dbutils.widgets.get(n) for n in names}
        try:
            built = job_params.from_strings(cls, values)
        except ParamError as error:
            self.telemetry.logger().error("bad job parameter: %s", error)
            self.close()
            raise
        changes = {}
        for name in TABLE_FIELDS:
            value = getattr(built, name, "")
            if value and self.storage_root:
                changes[name] = storage.resolve(value, base=self.storage_root).location
        resolved = dataclasses.replace(built, **changes) if changes else built  # type: ignore[type-var]
        for name in TABLE_FIELDS:
            if getattr(resolved, name, ""):
                self.telemetry.logger().info("%s: %s", name, getattr(resolved, name))
        return resolved

    def close(self) -> None:
        """Flush and stop telemetry (bounded; never raises)."""
        self.telemetry.close()


@dataclass(frozen=True)
class Cell:
    """One cell of a Databricks source notebook."""

    number: int
    line: int
    source: str

    @property
    def magic(self) -> str | None:
        """The magic command of a ``# MAGIC`` cell (``%pip``, ``%md``, ...), else ``None``."""
        lines = [ln for ln in self.source.strip().splitlines() if ln.strip()]
        if lines and all(ln.startswith("# MAGIC") for ln in lines):
            match = re.match(r"# MAGIC\s*(%\w+)", lines[0])
            return match.group(1) if match else "%md"
        return None


def parse_notebook(text: str) -> list[Cell]:
    """Split a Databricks source-format notebook into cells.

    Raises:
        NotebookError: The text does not start with ``# Databricks notebook source``.
    """
    if not text.startswith(_HEADER):
        raise NotebookError(f"not a Databricks source notebook: the first line must be {_HEADER!r}")
    cells, line = [], 1
    for number, chunk in enumerate(text[len(_HEADER) :].split(_SEPARATOR), start=1):
        cells.append(Cell(number, line, chunk))  # the chunk starts on the header/separator line
        line += chunk.count("\n")
    return cells


def _failing_line(error: BaseException, filename: str, cell: Cell) -> int:
    """The notebook line of the innermost frame of ``error`` inside ``cell``."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == filename and f.lineno]
    return cell.line + lines[-1] - 1 if lines else cell.line


def find_notebook(path: str | Path) -> Path:
    """``path`` when it is a file, else the notebook of that name shipped in the wheel.

    ``train`` and ``score`` name the two orchestrators; any other missing path is looked up by its
    file name among the shipped notebooks, so ``notebooks/diabetes_orchestrator_train.py`` works
    from any directory.

    Raises:
        NotebookError: Neither exists; the message names the shipped notebooks.
    """
    given = Path(path)
    if given.is_file():
        return given
    name = NOTEBOOKS.get(str(path), given.name)
    try:
        packaged = resources.files("diabetes_spark._notebooks") / name
    except ModuleNotFoundError:  # a source checkout without the package mapping: the notebooks folder
        packaged = Path(__file__).resolve().parent.parent / "notebooks" / name
    if packaged.is_file():
        _log.info("%s: not a file here; using the notebook shipped with diabetes_spark", path)
        return Path(str(packaged))
    shipped = ", ".join(sorted(NOTEBOOKS.values()))
    raise NotebookError(f"cannot read notebook {path}: no such file, and no shipped notebook of that name ({shipped})")


def _check_widgets(path: Path, text: str, given: Mapping[str, str]) -> None:
    """Refuse, before the first cell runs, a widget the notebook does not declare (a typo would
    otherwise leave the parameter at its default, unnoticed)."""
    declared = set(re.findall(r"""dbutils\.widgets\.text\(\s*["']([^"']+)["']""", text))
    unknown = sorted(set(given) - declared)
    if declared and unknown:
        raise ParamError(
            f"notebook {path.name} has no widget {', '.join(unknown)}; its widgets: {', '.join(sorted(declared))}"
        )


def run_notebook(path: str | Path, *, spark: SparkSession, widgets: dict[str, str] | None = None) -> str | None:
    """Run a source notebook locally, cell by cell, with ``spark`` and a :class:`LocalDbutils`.

    ``%pip`` cells are skipped (the package is installed locally), other magic cells too;
    ``dbutils.notebook.exit(value)`` ends the run.

    Returns:
        The value passed to ``dbutils.notebook.exit``, or ``None`` if the notebook did not exit.

    ``path`` is found as :func:`find_notebook` finds it.

    Raises:
        NotebookError: The notebook does not exist, or a cell failed; the message names the cell,
            its first line and the error, and the original exception is chained.
    """
    path = find_notebook(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise NotebookError(f"cannot read notebook {path}: {e.strerror}") from e
    _check_widgets(path, text, widgets or {})
    dbutils = LocalDbutils(widgets, secrets=runner_secrets())
    namespace: dict[str, Any] = {"spark": spark, "dbutils": dbutils, "__name__": "__main__", "display": _log.info}
    for cell in parse_notebook(text):
        if cell.magic:
            _log.info("%s cell %d: skipped %s cell", path.name, cell.number, cell.magic)
            continue
        filename = f"{path}:cell {cell.number}"
        try:
            exec(compile(cell.source, filename, "exec"), namespace)
        except NotebookExit as done:
            return done.value
        except Exception as e:
            raise NotebookError(
                f"{path.name} cell {cell.number} (line {_failing_line(e, filename, cell)}) failed: "
                f"{type(e).__name__}: {one_line(e)}"
            ) from e
    return None
