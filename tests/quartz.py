"""Quartz cron expressions, checked as the Databricks Jobs scheduler reads them (a test helper).

A Unix-style five-field expression or a misplaced ``?`` passes YAML, the typed job model and
``bundle validate`` alike, and only fails at deploy time; checking here names the wrong field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIELDS = (
    ("seconds", 0, 59, ()),
    ("minutes", 0, 59, ()),
    ("hours", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2099, ()),
)
_DOM_SPECIAL = re.compile(r"L(-([1-9]|[12][0-9]|30))?|LW|([1-9]|[12][0-9]|3[01])W")
_DOW_SPECIAL = re.compile(r"([1-7]|" + "|".join(_DAYS) + r")(L|#[1-5])|L", re.IGNORECASE)


def check_quartz_cron(expression: str) -> None:
    """Raise :class:`ValueError` naming the wrong field if ``expression`` is not a Quartz cron expression.

    Six or seven fields (seconds, minutes, hours, day-of-month, month, day-of-week, optional year);
    lists, ranges, ``*``, steps, month and day names; exactly one of day-of-month and day-of-week is
    ``?``; ``L``, ``W`` and ``#`` where Quartz allows them.
    """
    fields = str(expression).split()
    if len(fields) not in (6, 7):
        raise ValueError(
            f"a Quartz cron expression has 6 or 7 fields (seconds minutes hours day-of-month month day-of-week "
            f"[year]); {expression!r} has {len(fields)}"
        )
    if (fields[3] == "?") == (fields[5] == "?"):
        raise ValueError(f"exactly one of day-of-month and day-of-week must be '?' in {expression!r}")
    for text, (name, low, high, names) in zip(fields, _FIELDS):
        if text == "?" and name in ("day-of-month", "day-of-week"):
            continue
        for item in text.split(","):
            if (name == "day-of-month" and _DOM_SPECIAL.fullmatch(item)) or (
                name == "day-of-week" and _DOW_SPECIAL.fullmatch(item)
            ):
                continue
            if not _item_ok(item, low, high, names):
                raise ValueError(f"bad {name} field {text!r} in Quartz cron expression {expression!r}")


def _item_ok(item: str, low: int, high: int, names: Sequence[str]) -> bool:
    """One comma-separated item: ``*``, a value or a range, optionally with a ``/step``."""
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return False
    if base == "*":
        return True
    bounds = base.split("-")
    if len(bounds) > 2:
        return False
    return all(_value(b, low, high, names) is not None for b in bounds)


def _value(text: str, low: int, high: int, names: Sequence[str]) -> int | None:
    """A number within ``low..high`` or a month/day name, as a number; ``None`` if neither."""
    if text.isdigit():
        return int(text) if low <= int(text) <= high else None
    upper = text.upper()
    return names.index(upper) + low if upper in names else None
