"""``diabetes-spark setup-secrets``: the Databricks secret scope and the project's secrets, checked first.

Puts the App Insights connection string and the ADLS Gen2 secrets of the chosen storage route (account
key, or a service principal for OAuth; none for Unity Catalog) into the scope, creating it if missing.
Values come from the environment (:data:`SECRET_ENVIRONMENT`) or a prompt without echo, are checked
before anything is stored, and are never repeated: summaries and errors name keys and variables.
Needs the ``deploy`` extra (databricks-sdk, kept off clusters: on 15.4 it upgrades protobuf under MLflow).
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from diabetes_spark import params
from diabetes_spark.errors import ConfigurationError, one_line
from diabetes_spark.redaction import Redactor
from diabetes_spark.telemetry.config import parse_connection_string

_log = logging.getLogger(__name__)

HELP = "create the Databricks secret scope and put the project's secrets"

#: NotebookParams field naming a secret key -> (environment variable holding its value, what it is).
SECRET_ENVIRONMENT: dict[str, tuple[str, str]] = {
    "appinsights_secret": ("APPLICATIONINSIGHTS_CONNECTION_STRING", "Application Insights connection string"),
    "storage_account_secret": ("ADLS_ACCOUNT_NAME", "ADLS Gen2 storage account name"),
    "storage_container_secret": ("ADLS_CONTAINER_NAME", "ADLS Gen2 container name"),
    "storage_key_secret": ("ADLS_ACCOUNT_KEY", "ADLS Gen2 storage account key"),
    "storage_client_id_secret": ("AZURE_CLIENT_ID", "service principal application (client) id for ADLS Gen2"),
    "storage_client_secret_secret": ("AZURE_CLIENT_SECRET", "service principal client secret for ADLS Gen2"),
    "storage_tenant_id_secret": ("AZURE_TENANT_ID", "Entra ID tenant id of that service principal"),
}
_OAUTH_FIELDS = ("storage_client_id_secret", "storage_client_secret_secret", "storage_tenant_id_secret")
_STORAGE_FIELDS = ("storage_account_secret", "storage_container_secret", "storage_key_secret", *_OAUTH_FIELDS)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")  # secret scope and key names (Secrets API rule)
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_DOMAIN = r"(?=.{4,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_TENANT = re.compile(f"(?:{_GUID})|(?:{_DOMAIN})")
#: Field -> (the form its value must have, what that form is).
_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "storage_account_secret": (_ACCOUNT, "a storage account name (3-24 lowercase letters and digits)"),
    "storage_container_secret": (_CONTAINER, "a container name (3-63 lowercase letters, digits and single hyphens)"),
    "storage_client_id_secret": (re.compile(_GUID), "an application (client) id (a GUID)"),
    "storage_tenant_id_secret": (_TENANT, "a tenant id (a GUID, or a domain such as contoso.onmicrosoft.com)"),
}
#: Text of a network error -> the short reason shown (urllib3's own text is long and repetitive).
_NETWORK_REASONS = {
    "refused": "connection refused",
    "Name or service not known": "host name not found",
    "nodename nor servname": "host name not found",
    "getaddrinfo": "host name not found",
    "timed out": "timed out",
}
_DEFAULT_TIMEOUT_SECONDS = 30.0
_ERROR_LIMIT = 300  # characters of an SDK error quoted in a message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``setup-secrets`` flags to ``parser`` (key-name defaults come from ``NotebookParams``)."""
    parser.add_argument("--scope", required=True, help="secret scope to create if missing and fill")
    parser.add_argument("--host", help="workspace URL (default: $DATABRICKS_HOST or the profile's host)")
    parser.add_argument(
        "--profile", help="~/.databrickscfg profile to sign in with (default: $DATABRICKS_CONFIG_PROFILE)"
    )
    for name, default, help_text, _ in params.describe(params.NotebookParams):
        if name in SECRET_ENVIRONMENT:
            env = SECRET_ENVIRONMENT[name][0]
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                default=default,
                help=f"{help_text}; value from ${env} or a prompt (default key: {default!r}; '' skips it)",
            )
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="fail instead of prompting when a value's environment variable is unset",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to keep trying to reach the workspace (default: {_DEFAULT_TIMEOUT_SECONDS:g})",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create the scope if missing and put the secrets (``args`` as :func:`add_arguments` builds them).

    Returns the scope, host, ``scope_created``, the ``keys`` put and each key's ``sources``
    (``environment`` or ``prompt``), never a value.

    Raises:
        ConfigurationError: What a user can fix: databricks-sdk missing, a bad name or value, a value
            missing where no prompt is possible, no workspace reachable or authorised.
    """
    try:  # databricks-sdk comes with the deploy extra only
        importlib.import_module("databricks.sdk")
    except ImportError as e:
        raise ConfigurationError(
            "setup-secrets needs databricks-sdk, which is not installed: pip install 'diabetes_spark[deploy]'"
        ) from e
    scope = _check_name("scope", args.scope)
    wanted = _wanted_keys(args)
    values = {field: os.environ.get(SECRET_ENVIRONMENT[field][0], "").strip() for field in wanted}
    sources = {field: "environment" if value else "prompt" for field, value in values.items()}
    missing = [SECRET_ENVIRONMENT[f][0] for f, source in sources.items() if source == "prompt"]
    if missing and args.no_prompt:
        raise ConfigurationError(f"--no-prompt and no value in {', '.join(missing)}: set them or drop --no-prompt")
    if missing and not sys.stdin.isatty():
        raise ConfigurationError(f"no value in {', '.join(missing)} and no terminal to prompt on: set them")

    # Reach the workspace before prompting: nobody should type a key into a command that cannot store it.
    client = _workspace_client(args)
    host = client.config.host
    with _workspace_errors(host, "list the secret scopes"):
        existing = {s.name for s in client.secrets.list_scopes()}

    for field, source in sources.items():
        if source == "prompt":
            env, what = SECRET_ENVIRONMENT[field]
            values[field] = getpass.getpass(f"{what} (not echoed; set {env} to skip this prompt): ").strip()
    _check_values(values)

    created = scope not in existing and _create_scope(client, host, scope)
    for field, key in wanted.items():
        with _workspace_errors(host, f"put secret {key!r} in scope {scope!r}", secrets=list(values.values())):
            client.secrets.put_secret(scope, key, string_value=values[field])
        _log.info("put secret %s in scope %s", key, scope)
    return {
        "scope": scope,
        "host": host,
        "scope_created": created,
        "keys": list(wanted.values()),
        "sources": {wanted[f]: sources[f] for f in wanted},
    }


def _wanted_keys(args: argparse.Namespace) -> dict[str, str]:
    """Field -> secret key name for every secret to put (an empty key name skips it; no account, no storage)."""
    names = {f: (getattr(args, f, None) or "").strip() for f in SECRET_ENVIRONMENT}
    if not names["storage_account_secret"]:
        names.update({f: "" for f in _STORAGE_FIELDS})
    oauth = [f for f in _OAUTH_FIELDS if names[f]]
    if oauth and len(oauth) != len(_OAUTH_FIELDS):
        flags = ", ".join("--" + f.replace("_", "-") for f in _OAUTH_FIELDS)
        raise ConfigurationError(f"OAuth to ADLS Gen2 needs all three of {flags}: name every key or none")
    wanted = {f: _check_name(f"--{f.replace('_', '-')}", key) for f, key in names.items() if key}
    if not wanted:
        raise ConfigurationError("every secret key name is empty: nothing to put")
    return wanted


def _check_name(what: str, name: str) -> str:
    """``name`` if the Secrets API accepts it as a scope or key name."""
    if not _NAME.fullmatch(name or ""):
        raise ConfigurationError(f"{what} must be 1-128 letters, digits, '.', '_' or '-'; got {name!r}")
    return name


def _check_values(values: Mapping[str, str]) -> None:
    """Plausibility checks whose messages never repeat a value."""
    for field, value in values.items():
        env, what = SECRET_ENVIRONMENT[field]
        if not value:
            raise ConfigurationError(f"the {what} is empty: set {env} or type it at the prompt")
        pattern, form = _FORMATS.get(field, (None, ""))
        if pattern is not None and not pattern.fullmatch(value):
            raise ConfigurationError(f"{env} is not {form}")
    connection = values.get("appinsights_secret")
    if connection is not None:
        try:  # the rule telemetry applies when it reads the secret back
            parse_connection_string(connection, "the value to put")
        except ConfigurationError as e:
            raise ConfigurationError(
                f"APPLICATIONINSIGHTS_CONNECTION_STRING is neither a connection string nor a bare instrumentation "
                f"key that telemetry accepts: {e}"
            ) from e


def _workspace_client(args: argparse.Namespace) -> Any:
    """A ``WorkspaceClient`` with a bounded retry budget, auth from flags, environment or profile."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    timeout = max(float(args.timeout), 1.0)
    kwargs: dict[str, Any] = {"http_timeout_seconds": timeout, "retry_timeout_seconds": int(timeout)}
    if args.host:
        kwargs["host"] = args.host
    if args.profile:
        kwargs["profile"] = args.profile
    try:
        return WorkspaceClient(config=Config(**kwargs))
    except ValueError as e:  # the SDK's way of saying: no host, or no usable credentials
        reason = re.split(r", please check|\. Config:", one_line(e, limit=_ERROR_LIMIT))[0]
        raise ConfigurationError(
            f"no Databricks workspace configured ({reason}): set DATABRICKS_HOST and DATABRICKS_TOKEN, "
            "or pass --host / --profile"
        ) from e


def _create_scope(client: Any, host: str, scope: str) -> bool:
    """Create the scope; ``False`` when someone else created it since the scopes were listed."""
    from databricks.sdk.errors import ResourceAlreadyExists

    with _workspace_errors(host, f"create secret scope {scope!r}"):
        try:
            client.secrets.create_scope(scope)
        except ResourceAlreadyExists:
            return False
    _log.info("created secret scope %s", scope)
    return True


@contextmanager
def _workspace_errors(host: str, what: str, *, secrets: Sequence[str] = ()) -> Iterator[None]:
    """SDK, network and retry-timeout errors as one :class:`ConfigurationError` saying ``what`` failed.

    The SDK's message is quoted on one line without ``secrets``; any other error is a bug and passes.
    """
    from databricks.sdk.errors import DatabricksError, PermissionDenied, Unauthenticated

    try:
        yield
    except Exception as error:
        # The SDK's retry budget ends in a TimeoutError whose cause is the last real error.
        cause = error.__cause__ if isinstance(error, TimeoutError) and error.__cause__ else error
        quoted = Redactor(secrets)(one_line(cause, limit=_ERROR_LIMIT))
        if isinstance(cause, (Unauthenticated, PermissionDenied)):
            message = (
                f"the Databricks workspace at {host} refused to {what} ({quoted}): "
                "check DATABRICKS_TOKEN / the profile, and that you may manage secret scopes"
            )
        elif isinstance(cause, DatabricksError):
            message = f"the Databricks workspace at {host} could not {what}: {quoted}"
        elif isinstance(cause, OSError):  # requests' errors and TimeoutError included
            text = str(cause)
            reason = next((r for needle, r in _NETWORK_REASONS.items() if needle in text), type(cause).__name__)
            message = (
                f"cannot reach the Databricks workspace at {host} ({reason}): check DATABRICKS_HOST or --host, "
                "and the network"
            )
        else:
            raise
        raise ConfigurationError(message) from error
