"""How a telemetry session routes its component's log records: prepared (redacted, with
dimensions and trace ids) for the exporter, and relayed to the console at the logger's own level.

A component logger may serve two overlapping sessions in one process; the first saves its level
and propagation and the last restores them. That bookkeeping lives on the logger itself.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence

__all__ = [
    "SKIP_CONSOLE",
    "CONSOLE_ONLY",
    "CONSOLE_MESSAGE",
    "NOT_EXPORTED",
    "Preparer",
    "ConsoleRelay",
    "attach",
    "detach",
    "done_line",
]

#: On step-failure records: the caller (CLI, notebook) reports the error itself.
SKIP_CONSOLE = "_telemetry_skip_console"
#: On records for the console alone (a step's start): no exporter sends them.
CONSOLE_ONLY = "_telemetry_console_only"
#: On records the console shows in other words (a step's end, with its rows): the text it shows.
CONSOLE_MESSAGE = "_telemetry_console_message"
_LOCK = threading.Lock()


class Preparer(logging.Filter):
    """Handler filter: prepares every record that reaches the component's handlers."""

    def __init__(self, prepare: Callable[[logging.LogRecord], None]) -> None:
        super().__init__()
        self._prepare = prepare

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._prepare(record)
        except Exception:  # a record that cannot be formatted fails in its handler as it would anyway
            pass
        return True


def done_line(label: str, rows: int | None, seconds: float) -> str:
    """A step's end as the console shows it: ``score: write 1,000,000 rows ... 8.4 s``."""
    counted = f" {rows:,} rows" if rows is not None else ""
    return f"{label}{counted} ... {seconds:.1f} s"


class _NotExported(logging.Filter):
    """Exporter filter: keeps records meant for the console alone out of the telemetry."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, CONSOLE_ONLY, False)


NOT_EXPORTED = _NotExported()


class ConsoleRelay(logging.Handler):
    """Hands the component's records to the root logger's handlers, as propagation would.

    It applies the level the component logger had before telemetry raised it to INFO, and skips
    step failures: the exception propagates and its caller reports it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threshold = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        threshold = self.threshold or root.getEffectiveLevel()
        if record.levelno >= threshold and not getattr(record, SKIP_CONSOLE, False):
            shown = getattr(record, CONSOLE_MESSAGE, None)
            if shown is not None:
                record = copy.copy(record)
                record.msg, record.args = shown, None
            root.handle(record)


class _Users(logging.Filter):
    """Marks a component logger in use: by how many sessions, and its settings before the first."""

    def __init__(self, level: int, propagate: bool) -> None:
        super().__init__()
        self.count, self.level, self.propagate = 0, level, propagate

    def filter(self, record: logging.LogRecord) -> bool:
        return True


def _users(logger: logging.Logger) -> _Users | None:
    return next((f for f in logger.filters if isinstance(f, _Users)), None)


def attach(logger: logging.Logger, handlers: Sequence[logging.Handler], *, info: bool) -> int:
    """Add ``handlers`` to ``logger``, stop its propagation (the relay propagates), raise it to INFO
    when ``info`` (App Insights gets INFO); returns the level it had before any session."""
    with _LOCK:
        users = _users(logger)
        if users is None:
            users = _Users(logger.level, logger.propagate)
            logger.addFilter(users)
        users.count += 1
        for handler in handlers:
            logger.addHandler(handler)
        if info and (logger.level == logging.NOTSET or logger.level > logging.INFO):
            logger.setLevel(logging.INFO)
        logger.propagate = False
        return users.level


def detach(logger: logging.Logger, handlers: Sequence[logging.Handler]) -> None:
    """Remove ``handlers``; the last session to leave restores the logger's own settings."""
    with _LOCK:
        for handler in handlers:
            logger.removeHandler(handler)
        users = _users(logger)
        if users is None:
            return
        users.count -= 1
        if users.count <= 0:
            logger.removeFilter(users)
            logger.setLevel(users.level)
            logger.propagate = users.propagate
