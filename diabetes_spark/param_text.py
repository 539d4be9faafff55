"""Parameters as strings: a widget's or a flag's text turned into a parameters dataclass, the
widgets a dataclass declares, and ``NAME=VALUE`` flags. Generic over :mod:`diabetes_spark.params`'
dataclasses, so that module keeps to the parameters themselves."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from diabetes_spark.errors import ParamError

P = TypeVar("P")


def _convert(name: str, raw: Any, kind: Any) -> Any:
    """Turn a widget/CLI string into the field's type."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
    except ValueError as e:
        type_name = kind if isinstance(kind, str) else kind.__name__
        raise ParamError(f"{name} must be a{'n' if type_name == 'int' else ''} {type_name}; got {raw!r}") from e
    return text


def from_strings(cls: type[P], values: Mapping[str, Any]) -> P:
    """Build a params object from widget or CLI values (strings), converting and validating them.

    Args:
        cls: One of the params dataclasses.
        values: Name -> value; names not given take the field's default, unknown names are an error.

    Raises:
        ParamError: A value has the wrong type or is out of range, or a name is unknown.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParamError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    kwargs = {name: _convert(name, raw, known[name].type) for name, raw in values.items()}
    return cls(**kwargs)


def widget_defaults(cls: type) -> dict[str, str]:
    """The widgets a notebook declares for ``cls``: name -> default as the string a widget holds."""
    return {f.name: str(f.default) for f in dataclasses.fields(cls)}


def describe(cls: type) -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """(name, default, help, choices) for every parameter of ``cls``, in declaration order."""
    return [
        (f.name, str(f.default), f.metadata.get("help", ""), f.metadata.get("choices")) for f in dataclasses.fields(cls)
    ]


def parse_assignments(items: Iterable[str], *, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` strings (repeated ``--widget`` or ``--var`` flags) as a mapping.

    Raises:
        ParamError: An item has no ``=`` or an empty name; the message names ``flag``.
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParamError(f"{flag} takes NAME=VALUE; got {item!r}")
        out[name.strip()] = value
    return out
