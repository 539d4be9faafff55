"""The alias ledger: a Delta table holding one row per move of ``champion`` or ``challenger``.

Neither MLflow nor Unity Catalog keeps a history of alias moves. Every move this package makes (the
training gate, ``promote``, ``rollback``) goes through :meth:`Ledger.move`, which sets the alias and
appends its row: the model, the alias, the version it left and the one it moved to, who moved it,
why, the metrics behind the move, the MLflow run and the time. A move made elsewhere (the UI, the
REST API) is found at each job's start by :meth:`Ledger.reconcile`, which compares the registry with
the ledger's last row and records a difference as an ``outside`` move.

The table is append-only (``delta.appendOnly``: Delta refuses an update or delete). Rows are blind
appends, which never conflict with one another, so two jobs writing at once both land.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from diabetes_spark import delta_writes, registry, storage
from diabetes_spark.errors import OutputError, about
from diabetes_spark.runtime import is_databricks

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame, Row, SparkSession

    from diabetes_spark.storage import TableRef

#: The local default, a folder of the workspace (``DIABETES_SPARK_HOME``); on Databricks, a table of
#: the session's catalog and schema (the bundle names one in its own).
DEFAULT_NAME = "model_alias_events"
#: The aliases the ledger follows.
ALIASES = (registry.CHAMPION, registry.CHALLENGER)
#: What made a move (column ``action``); ``outside`` is also ``moved_by`` of a move made elsewhere.
GATE, PROMOTE, ROLLBACK, OUTSIDE = "gate", "promote", "rollback", "outside"
#: The ledger's columns, in order (SQL types).
COLUMNS = (
    ("model_name", "string"),
    ("alias", "string"),
    ("from_version", "string"),
    ("to_version", "string"),
    ("action", "string"),
    ("moved_by", "string"),
    ("reason", "string"),
    ("metrics", "map<string,double>"),
    ("mlflow_run_id", "string"),
    ("moved_at", "timestamp"),
)
SCHEMA_DDL = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
#: Set when the ledger is created: Delta then refuses anything but appends.
TABLE_PROPERTIES = {"delta.appendOnly": "true"}


@dataclass(frozen=True)
class Move:
    """One row of the ledger."""

    model_name: str
    alias: str
    from_version: str | None
    to_version: str | None
    action: str
    moved_by: str
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str = ""
    moved_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))

    def describe(self) -> str:
        """``champion of M: v2 -> v1 (rollback by alice: reason)``."""
        was = f"v{self.from_version}" if self.from_version else "none"
        now = f"v{self.to_version}" if self.to_version else "none"
        return f"{self.alias} of {self.model_name}: {was} -> {now} ({self.action} by {self.moved_by}: {self.reason})"


def resolve(spark: SparkSession, given: str, home: Path) -> TableRef:
    """The ledger table: ``given``; else, on Databricks, ``model_alias_events`` in the session's
    catalog and schema; else that folder under the local workspace ``home``."""
    if given.strip():
        return storage.resolve(given)
    if is_databricks():
        row = spark.sql("SELECT current_catalog(), current_database()").first()
        return storage.resolve(f"{row[0]}.{row[1]}.{DEFAULT_NAME}" if row else DEFAULT_NAME)
    return storage.resolve(str((home / DEFAULT_NAME).resolve()))


def current_user(spark: SparkSession) -> str:
    """Who runs this: the session's user (on Databricks the user or service principal)."""
    row = spark.sql("SELECT current_user()").first()
    return str(row[0]) if row and row[0] else "unknown"


@dataclass(frozen=True)
class Ledger:
    """The ledger table ``ref``, read and appended through ``spark``."""

    spark: SparkSession
    ref: TableRef

    def check(self) -> None:
        """Fail before anything moves when the table exists with other columns than the ledger's.

        Raises:
            OutputError: ``ref`` is another table; nothing was written.
        """
        with about(f"alias ledger {self.ref}"):
            if not storage.table_exists(self.spark, self.ref):
                return
            found = [(f.name.lower(), f.dataType.simpleString()) for f in self._read().schema.fields]
        if found != list(COLUMNS):
            have = ", ".join(f"{n} {t}" for n, t in found)
            raise OutputError(
                f"alias ledger {self.ref} exists with other columns ({have}) than a ledger's ({SCHEMA_DDL}): it is "
                "another table. Give --alias-ledger (widget alias_ledger) a new table or the ledger's own"
            )

    def _read(self) -> DataFrame:
        return storage.read_table(self.spark, self.ref)

    def history(self, model_name: str, alias: str | None = None) -> list[Row]:
        """The rows of ``model_name`` (and ``alias``), oldest first."""
        if not storage.table_exists(self.spark, self.ref):
            return []
        rows = self._read().where(f"model_name = '{_quoted(model_name)}'")
        if alias is not None:
            rows = rows.where(f"alias = '{_quoted(alias)}'")
        return sorted(rows.collect(), key=lambda row: row["moved_at"])  # sorted here: no sort job for a few rows

    def append(self, *moves: Move) -> None:
        """Append ``moves`` in one commit (a blind append: concurrent appends all land)."""
        if not moves:
            return
        rows = [tuple(getattr(m, name) for name, _ in COLUMNS) for m in moves]
        frame = _frame(self.spark, rows)
        with about(f"alias ledger {self.ref}"):
            delta_writes.write_delta(frame, self.ref, mode="append", table_properties=TABLE_PROPERTIES)

    def move(
        self,
        model_name: str,
        alias: str,
        version: str,
        *,
        action: str,
        reason: str,
        moved_by: str = "",
        metrics: dict[str, float] | None = None,
        run_id: str = "",
    ) -> Move:
        """Point ``alias`` at ``version`` and append the move's row; returns it."""
        before = registry.alias_version(model_name, alias)
        at = datetime.now(timezone.utc).replace(tzinfo=None)  # before the move: concurrent moves order as made
        registry.set_alias(model_name, alias, version)
        done = Move(
            model_name,
            alias,
            before,
            version,
            action,
            moved_by or current_user(self.spark),
            reason,
            dict(metrics or {}),
            run_id,
            at,
        )
        self.append(done)
        return done

    def reconcile(self, model_name: str) -> list[Move]:
        """Record as ``outside`` moves where the registry's aliases differ from the ledger's last rows.

        Two jobs starting at once find the same difference; each difference is written once
        (Delta's ``txnAppId``, keyed by the difference and the ledger row it follows).
        """
        found, everything = [], self.history(model_name)
        for alias in ALIASES:
            rows = [row for row in everything if row["alias"] == alias]
            recorded = rows[-1]["to_version"] if rows else None
            actual = registry.alias_version(model_name, alias)
            if actual == recorded:
                continue
            reason = "moved outside diabetes-spark (the registry differs from the ledger's last row)"
            move = Move(model_name, alias, recorded, actual, OUTSIDE, OUTSIDE, reason)
            after = rows[-1]["moved_at"].isoformat() if rows else "start"
            key = hashlib.sha256(f"{model_name}|{alias}|{recorded}|{actual}|{after}".encode()).hexdigest()[:24]
            with about(f"alias ledger {self.ref}"):
                delta_writes.write_delta(
                    _frame(self.spark, [tuple(getattr(move, n) for n, _ in COLUMNS)]),
                    self.ref,
                    mode="append",
                    table_properties=TABLE_PROPERTIES,
                    once_as=f"alias-ledger-outside-{key}",
                )
            found.append(move)
        return found


def start(spark: SparkSession, given: str, home: Path, model_name: str) -> Ledger:
    """The ledger of a job, checked, with the moves made outside since its last row recorded."""
    opened = Ledger(spark, resolve(spark, given, home))
    opened.check()
    opened.reconcile(model_name)
    return opened


def _frame(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """The ledger rows as a frame of the ledger's schema."""
    return spark.createDataFrame(rows, SCHEMA_DDL)


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def champion_before(history: list[Row], current: str | None) -> str | None:
    """The version ``champion`` held before ``current``, by the ledger's champion rows (oldest first).

    The rows are replayed as a stack of holders: a move pushes its version; a rollback pops back to
    the version it moved to. So rolling back twice walks back two promotions, never forth again.
    """
    stack: list[str] = []
    for row in history:
        target = row["to_version"]
        if row["action"] == ROLLBACK and target in stack:
            del stack[stack.index(target) + 1 :]
        elif target and (not stack or stack[-1] != target):
            stack.append(target)
        elif not target:
            stack.clear()
    if current is None or not stack or stack[-1] != current:
        return None
    return stack[-2] if len(stack) > 1 else None
