"""How a session routes its component's log records: prepared (redacted, with dimensions and trace
ids) to the exporter, and to the console at the level the component logger had before the session.

A component logger may serve two overlapping sessions in one process: the first to attach saves
its level and propagation, the last to detach puts them back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

#: On records the console must not show: a step's end (the jobs' recorder prints its own line) and
#: a failure (its caller, the command line or the notebook, reports it).
EXPORT_ONLY = "_telemetry_export_only"

_LOCK = threading.Lock()
#: Component logger name -> [sessions attached, its level and propagation before the first].
_SAVED: dict[str, list] = {}


class Route(logging.Handler):
    """The one handler a session adds to its component logger: it prepares each record, hands it
    to the exporter, and relays it to the root logger's handlers as propagation would, at the
    level the logger had before the session raised it to INFO; :data:`EXPORT_ONLY` records skip it."""

    def __init__(self, prepare: Callable[[logging.LogRecord], None], exporter: logging.Handler | None) -> None:
        super().__init__()
        self.prepare, self.exporter = prepare, exporter
        self.threshold = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.prepare(record)
            if self.exporter is not None:
                self.exporter.handle(record)
            root = logging.getLogger()
            if record.levelno >= (self.threshold or root.getEffectiveLevel()) and not getattr(
                record, EXPORT_ONLY, False
            ):
                root.handle(record)
        except Exception:  # logging's own policy: report on stderr, never raise into the caller
            self.handleError(record)


def attach(logger: logging.Logger, route: Route, *, info: bool) -> None:
    """Add ``route`` to ``logger`` and stop its propagation (the route relays); raise the logger
    to INFO when ``info`` (App Insights gets INFO)."""
    with _LOCK:
        saved = _SAVED.setdefault(logger.name, [0, logger.level, logger.propagate])
        saved[0] += 1
        route.threshold = saved[1]
        logger.addHandler(route)
        if info and (logger.level == logging.NOTSET or logger.level > logging.INFO):
            logger.setLevel(logging.INFO)
        logger.propagate = False


def detach(logger: logging.Logger, route: Route) -> None:
    """Remove ``route``; the last session to leave puts the logger's own settings back."""
    with _LOCK:
        logger.removeHandler(route)
        saved = _SAVED[logger.name]
        saved[0] -= 1
        if saved[0] == 0:
            del _SAVED[logger.name]
            logger.setLevel(saved[1])
            logger.propagate = saved[2]
