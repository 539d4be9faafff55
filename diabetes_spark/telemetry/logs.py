"""How a telemetry session routes its component's log records: prepared (redacted, with
dimensions and trace ids) for the exporter, and relayed to the console at the logger's own level.

A component logger may serve two overlapping sessions in one process; the first saves its level
and propagation and the last restores them. That bookkeeping lives on the logger itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

__all__ = ["SKIP_CONSOLE", "Preparer", "ConsoleRelay", "attach", "detach"]

#: On step-failure records: the caller (CLI, notebook) reports the error itself.
SKIP_CONSOLE = "_telemetry_skip_console"
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
