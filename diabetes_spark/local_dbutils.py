"""``dbutils`` off Databricks: widgets, secrets from the environment, ``notebook.exit``.

The notebook runner hands a :class:`LocalDbutils` to notebooks it runs off Databricks, so they run
unchanged. Local secrets are environment variables (:func:`secret_env_name`).
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Mapping
from typing import Any

from diabetes_spark.runtime import is_databricks

#: Local secrets: ``DIABETES_SPARK_SECRET__<SCOPE>__<KEY>``, scope and key upper-cased with every
#: character outside A-Z and 0-9 turned into ``_`` (scope ``diabetes-spark``, key ``adls-account-key``
#: -> ``DIABETES_SPARK_SECRET__DIABETES_SPARK__ADLS_ACCOUNT_KEY``).
SECRET_ENV_PREFIX = "DIABETES_SPARK_SECRET__"


def secret_env_name(scope: str, key: str) -> str:
    """The environment variable that holds secret ``key`` of ``scope`` off Databricks."""

    def norm(text: str) -> str:
        return re.sub(r"[^A-Z0-9]", "_", text.upper())

    return f"{SECRET_ENV_PREFIX}{norm(scope)}__{norm(key)}"


class NotebookExit(Exception):  # noqa: N818 - Databricks' own name
    """Raised by ``dbutils.notebook.exit`` to stop a notebook with a value, as on Databricks."""

    def __init__(self, value: str) -> None:
        super().__init__("notebook exited")
        self.value = value


class _Widgets:
    """``dbutils.widgets``: declared text widgets with defaults, overridable by the runner."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.declared: dict[str, str] = {}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:  # noqa: N803 - Databricks' name
        self.declared[name] = defaultValue

    def get(self, name: str) -> str:
        if name not in self.declared:
            raise ValueError(f"widget {name!r} is not declared; declared: {sorted(self.declared)}")
        return self._values.get(name, self.declared[name])

    getArgument = get  # noqa: N815 - Databricks' name

    def removeAll(self) -> None:  # noqa: N802 - Databricks' name
        self.declared.clear()


class _SecretMetadata:
    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SecretMetadata(key='{self.key}')"


class _Secrets:
    """``dbutils.secrets`` backed by environment variables (see :func:`secret_env_name`).

    ``builtins.list`` in annotations: inside this class ``list`` is the method of Databricks' name.
    """

    def get(self, scope: str, key: str) -> str:
        name = secret_env_name(scope, key)
        value = os.environ.get(name)
        if value is None:
            raise KeyError(
                f"secret {key!r} does not exist in scope {scope!r} (locally: set environment variable {name})"
            )
        return value

    def list(self, scope: str) -> builtins.list[_SecretMetadata]:
        prefix = secret_env_name(scope, "")
        return [
            _SecretMetadata(k[len(prefix) :].lower().replace("_", "-"))
            for k in sorted(os.environ)
            if k.startswith(prefix)
        ]

    def listScopes(self) -> builtins.list[str]:  # noqa: N802 - Databricks' name
        return sorted(
            {k[len(SECRET_ENV_PREFIX) :].split("__")[0].lower() for k in os.environ if k.startswith(SECRET_ENV_PREFIX)}
        )


class _Notebook:
    def exit(self, value: str) -> None:
        raise NotebookExit(value)


class _Library:
    def restartPython(self) -> None:  # noqa: N802 - Databricks' name
        """Nothing to restart locally: the package is installed in this interpreter already."""


class LocalDbutils:
    """A stand-in for Databricks' ``dbutils`` so notebooks run unchanged off Databricks.

    Args:
        widgets: Widget values that override the defaults the notebook declares.
        secrets: Where secrets come from (default: environment variables, :func:`secret_env_name`).
    """

    def __init__(self, widgets: Mapping[str, str] | None = None, *, secrets: Any = None) -> None:
        self.widgets = _Widgets(widgets or {})
        self.secrets = secrets if secrets is not None else _Secrets()
        self.notebook = _Notebook()
        self.library = _Library()


def runner_secrets() -> Any:
    """The secrets of a notebook the runner executes: on Databricks the workspace's secret scopes
    (a Python wheel task, e.g. the serverless scoring job, runs the notebook through the runner),
    elsewhere environment variables."""
    if is_databricks():
        from databricks.sdk.runtime import dbutils  # on every runtime

        return dbutils.secrets
    return _Secrets()
