"""How a session routes its component's log records: prepared (redacted, with dimensions and trace
ids) to the exporter, and to the console at the level the component logger had before the session.
Two overlapping sessions of one component share what the first saved; the last to leave restores it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

#: On records the console must not show: a step's end (the jobs' recorder prints its own line) and
#: a failure (its caller, the command line or the notebook, reports it).
EXPORT_ONLY = "_telemetry_export_only"

_LOCK = threading.Lock()


class Route(logging.Handler):
    """The one handler a session adds to its component logger: it prepares each record, hands it
    to the exporter, and relays it to the root logger's handlers as propagation would, at the
    level the logger had before the session raised it to INFO; :data:`EXPORT_ONLY` records skip it."""

    def __init__(self, prepare: Callable[[logging.LogRecord], None], exporter: logging.Handler | None) -> None:
        super().__init__()
        self.prepare, self.exporter = prepare, exporter
        self.saved = (logging.NOTSET, True)  # the logger's level and propagation before the sessions

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.prepare(record)
            if self.exporter is not None:
                self.exporter.handle(record)
            root = logging.getLogger()
            if record.levelno >= (self.saved[0] or root.getEffectiveLevel()) and not hasattr(record, EXPORT_ONLY):
                root.handle(record)
        except Exception:  # logging's own policy: report on stderr, never raise into the caller
            self.handleError(record)


def attach(logger: logging.Logger, route: Route, *, info: bool) -> None:
    """Add ``route`` to ``logger`` and stop its propagation (the route relays); raise the logger
    to INFO when ``info`` (App Insights gets INFO)."""
    with _LOCK:
        others = [h for h in logger.handlers if isinstance(h, Route)]
        route.saved = others[0].saved if others else (logger.level, logger.propagate)
        logger.addHandler(route)
        if info and (logger.level == logging.NOTSET or logger.level > logging.INFO):
            logger.setLevel(logging.INFO)
        logger.propagate = False


def detach(logger: logging.Logger, route: Route) -> None:
    """Remove ``route``; the last session to leave puts the logger's own settings back."""
    with _LOCK:
        logger.removeHandler(route)
        if not any(isinstance(h, Route) for h in logger.handlers):
            logger.setLevel(route.saved[0])
            logger.propagate = route.saved[1]
