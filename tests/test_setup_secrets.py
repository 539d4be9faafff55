"""``setup-secrets`` against a local stand-in for the workspace Secrets API on 127.0.0.1.

The real databricks-sdk client talks HTTP to a ThreadingHTTPServer that records every request; the
tests assert what was sent and that no planted secret value reaches stdout, stderr or a log record.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from diabetes_spark import cli, params
from diabetes_spark.deploy import secrets
from diabetes_spark.errors import ConfigurationError

TOKEN = "dapi-test-token-0000"
#: Planted values: distinctive enough that any leak is found by a substring search.
VALUES = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": (
        "InstrumentationKey=5ec7e75e-1111-4c8f-9d0a-0badc0ffee42;IngestionEndpoint=https://planted.example/"
    ),
    "ADLS_ACCOUNT_NAME": "plantedacct42",
    "ADLS_CONTAINER_NAME": "planted-container",
    "ADLS_ACCOUNT_KEY": "cGxhbnRlZC1hY2NvdW50LWtleS12YWx1ZQ==PLANTED",
}
#: A service principal for OAuth to ADLS Gen2 (its key names are empty by default: not put unless named).
OAUTH_VALUES = {
    "AZURE_CLIENT_ID": "0badc0de-1111-4222-8333-444455556666",
    "AZURE_CLIENT_SECRET": "Pl4nted~ClientSecret.Value_0123456789",
    "AZURE_TENANT_ID": "7e57e57e-aaaa-4bbb-8ccc-ddddeeeeffff",
}
OAUTH_FLAGS = (
    "--storage-client-id-secret",
    "adls-client-id",
    "--storage-client-secret-secret",
    "adls-client-secret",
    "--storage-tenant-id-secret",
    "adls-tenant-id",
)
DEFAULT_KEYS = params.widget_defaults(params.NotebookParams)
#: The fields setup-secrets puts with its default key names (the OAuth ones default to "": skipped).
DEFAULT_FIELDS = [f for f in secrets.SECRET_ENVIRONMENT if DEFAULT_KEYS[f]]


class Workspace:
    """The few Secrets API endpoints the SDK calls, with their documented error codes."""

    def __init__(self) -> None:
        self.scopes: set[str] = set()
        self.secrets: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.deny: set[str] = set()  # paths answered 403
        self.unlisted: set[str] = set()  # scopes that exist but a concurrent creator made after our list
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, Any]]:
        if path == "/.well-known/databricks-config":
            return 200, {"oidc_endpoint": "http://127.0.0.1/oidc", "workspace_id": "1234567890"}
        with self.lock:
            self.requests.append((method, path, body))
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
        if path in self.deny:
            return 403, {"error_code": "PERMISSION_DENIED", "message": "User does not have MANAGE permission."}
        if (method, path) == ("GET", "/api/2.0/secrets/scopes/list"):
            listed = sorted(self.scopes - self.unlisted)
            return 200, {"scopes": [{"name": s, "backend_type": "DATABRICKS"} for s in listed]}
        if (method, path) == ("POST", "/api/2.0/secrets/scopes/create"):
            if body["scope"] in self.scopes:
                return 400, {
                    "error_code": "RESOURCE_ALREADY_EXISTS",
                    "message": f"Scope {body['scope']} already exists!",
                }
            self.scopes.add(body["scope"])
            return 200, {}
        if (method, path) == ("POST", "/api/2.0/secrets/put"):
            if body["scope"] not in self.scopes:
                return 404, {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"Scope {body['scope']} does not exist!",
                }
            self.secrets[(body["scope"], body["key"])] = body["string_value"]
            return 200, {}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}


@pytest.fixture
def workspace() -> Iterator[tuple[Workspace, str]]:
    state = Workspace()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            code, payload = state.handle(method, self.path.split("?")[0], self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Token auth from the environment only: no profile file, no other DATABRICKS_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "AZURE_")) or name in VALUES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)


def _args(host: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    return parser.parse_args(["--scope", "diabetes-spark", "--host", host, "--timeout", "2", *extra])


def _assert_no_value_leaked(text: str) -> None:
    for value in [*VALUES.values(), *OAUTH_VALUES.values()]:
        assert value not in text


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)


def test_creates_the_scope_and_puts_the_four_secrets_from_the_environment(
    workspace: tuple[Workspace, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, host = workspace
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)  # the SDK logs request bodies at DEBUG: they must come redacted

    summary = secrets.run(_args(host, "--no-prompt"))

    assert DEFAULT_FIELDS == [
        "appinsights_secret",
        "storage_account_secret",
        "storage_container_secret",
        "storage_key_secret",
    ]
    keys = [DEFAULT_KEYS[f] for f in DEFAULT_FIELDS]
    assert state.requests == [
        ("GET", "/api/2.0/secrets/scopes/list", None),
        ("POST", "/api/2.0/secrets/scopes/create", {"scope": "diabetes-spark"}),
        *[
            (
                "POST",
                "/api/2.0/secrets/put",
                {
                    "scope": "diabetes-spark",
                    "key": DEFAULT_KEYS[f],
                    "string_value": VALUES[secrets.SECRET_ENVIRONMENT[f][0]],
                },
            )
            for f in DEFAULT_FIELDS
        ],
    ]
    assert summary == {
        "scope": "diabetes-spark",
        "host": host,
        "scope_created": True,
        "keys": keys,
        "sources": {key: "environment" for key in keys},
    }
    assert any("put secret adls-account-key in scope diabetes-spark" in r.getMessage() for r in caplog.records)
    assert "**REDACTED**" in _log_text(caplog), "the SDK's request log was not captured: the check below would be empty"
    out, err = capfd.readouterr()
    for text in (out, err, _log_text(caplog), json.dumps(summary)):
        _assert_no_value_leaked(text)


def test_an_existing_scope_is_reused_and_custom_key_names_are_used(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    state.scopes.add("diabetes-spark")
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)

    summary = secrets.run(_args(host, "--no-prompt", "--storage-key-secret", "lake-key"))

    assert summary["scope_created"] is False
    assert [r[1] for r in state.requests].count("/api/2.0/secrets/scopes/create") == 0
    assert state.secrets[("diabetes-spark", "lake-key")] == VALUES["ADLS_ACCOUNT_KEY"]
    assert ("diabetes-spark", DEFAULT_KEYS["storage_key_secret"]) not in state.secrets


def test_a_scope_created_between_our_list_and_create_is_reused(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    state.scopes.add("diabetes-spark")
    state.unlisted.add("diabetes-spark")
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)

    summary = secrets.run(_args(host, "--no-prompt"))

    assert summary["scope_created"] is False
    assert [r[1] for r in state.requests].count("/api/2.0/secrets/scopes/create") == 1
    assert len(state.secrets) == 4


def test_an_empty_storage_account_key_name_skips_every_storage_secret(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", VALUES["APPLICATIONINSIGHTS_CONNECTION_STRING"])

    summary = secrets.run(_args(host, "--no-prompt", "--storage-account-secret", ""))

    assert summary["keys"] == [DEFAULT_KEYS["appinsights_secret"]]
    assert set(state.secrets) == {("diabetes-spark", DEFAULT_KEYS["appinsights_secret"])}


def test_missing_values_are_prompted_for_without_echo(
    workspace: tuple[Workspace, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, host = workspace
    monkeypatch.setenv("ADLS_ACCOUNT_NAME", VALUES["ADLS_ACCOUNT_NAME"])
    monkeypatch.setenv("ADLS_CONTAINER_NAME", VALUES["ADLS_CONTAINER_NAME"])
    prompts: list[str] = []
    answers = iter([VALUES["APPLICATIONINSIGHTS_CONNECTION_STRING"] + "\n", VALUES["ADLS_ACCOUNT_KEY"]])

    def fake_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(secrets.getpass, "getpass", fake_getpass)
    monkeypatch.setattr(secrets.sys.stdin, "isatty", lambda: True, raising=False)
    caplog.set_level(logging.DEBUG)

    summary = secrets.run(_args(host))

    assert len(prompts) == 2
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in prompts[0] and "ADLS_ACCOUNT_KEY" in prompts[1]
    assert (
        state.secrets[("diabetes-spark", DEFAULT_KEYS["appinsights_secret"])]
        == VALUES["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    )
    assert state.secrets[("diabetes-spark", DEFAULT_KEYS["storage_key_secret"])] == VALUES["ADLS_ACCOUNT_KEY"]
    assert summary["sources"] == {
        DEFAULT_KEYS["appinsights_secret"]: "prompt",
        DEFAULT_KEYS["storage_account_secret"]: "environment",
        DEFAULT_KEYS["storage_container_secret"]: "environment",
        DEFAULT_KEYS["storage_key_secret"]: "prompt",
    }
    out, err = capfd.readouterr()
    for text in (out, err, _log_text(caplog), *prompts):
        _assert_no_value_leaked(text)


def test_no_prompt_with_a_missing_value_fails_before_contacting_the_workspace(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    monkeypatch.setenv("ADLS_ACCOUNT_NAME", VALUES["ADLS_ACCOUNT_NAME"])

    with pytest.raises(ConfigurationError) as info:
        secrets.run(_args(host, "--no-prompt"))

    message = str(info.value)
    for env in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "ADLS_CONTAINER_NAME", "ADLS_ACCOUNT_KEY"):
        assert env in message
    assert "ADLS_ACCOUNT_NAME" not in message
    assert state.requests == []


def test_without_a_terminal_a_missing_value_is_an_error_not_a_hang(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    monkeypatch.setattr(secrets.sys.stdin, "isatty", lambda: False, raising=False)

    with pytest.raises(ConfigurationError, match="no terminal to prompt on"):
        secrets.run(_args(host))
    assert state.requests == []


@pytest.mark.parametrize(
    ("env", "value", "message", "flags"),
    [
        ("ADLS_ACCOUNT_NAME", "Not_An-Account", "ADLS_ACCOUNT_NAME is not a storage account name", ()),
        ("ADLS_CONTAINER_NAME", "Bad--Container", "ADLS_CONTAINER_NAME is not a container name", ()),
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "/subscriptions/x/appi", "neither a connection string", ()),
        ("AZURE_CLIENT_ID", "my-app", "AZURE_CLIENT_ID is not an application (client) id", OAUTH_FLAGS),
        ("AZURE_TENANT_ID", "tenant_Planted!", "AZURE_TENANT_ID is not a tenant id", OAUTH_FLAGS),
    ],
)
def test_implausible_values_fail_without_repeating_them(
    workspace: tuple[Workspace, str],
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    value: str,
    message: str,
    flags: tuple[str, ...],
) -> None:
    state, host = workspace
    for name, planted in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, planted)
    monkeypatch.setenv(env, value)

    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        secrets.run(_args(host, "--no-prompt", *flags))
    assert value not in str(info.value)
    assert not state.secrets and [r[1] for r in state.requests] == ["/api/2.0/secrets/scopes/list"]


@pytest.mark.parametrize("scope", ["bad scope", "", "x" * 129])
def test_a_bad_scope_name_is_refused_locally(workspace: tuple[Workspace, str], scope: str) -> None:
    state, host = workspace
    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    with pytest.raises(ConfigurationError, match="scope must be 1-128 letters"):
        secrets.run(parser.parse_args(["--scope", scope, "--host", host, "--no-prompt"]))
    assert state.requests == []


def test_no_workspace_reachable_fails_quickly_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:  # a port that nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    started = time.monotonic()

    with pytest.raises(ConfigurationError) as info:
        secrets.run(_args(host, "--no-prompt", "--timeout", "1"))

    assert time.monotonic() - started < 30
    message = str(info.value)
    assert f"cannot reach the Databricks workspace at {host} (connection refused)" in message
    assert "DATABRICKS_HOST" in message
    _assert_no_value_leaked(message)


def test_no_host_configured_at_all_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=r"no Databricks workspace configured.*DATABRICKS_HOST"):
        secrets.run(parser.parse_args(["--scope", "s", "--no-prompt", "--timeout", "1"]))


def test_a_rejected_token_or_missing_permission_is_a_clear_error(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    state.deny.add("/api/2.0/secrets/put")

    with pytest.raises(ConfigurationError) as info:
        secrets.run(_args(host, "--no-prompt"))
    message = str(info.value)
    assert f"the Databricks workspace at {host} refused to put secret" in message
    assert "MANAGE permission" in message
    _assert_no_value_leaked(message)

    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    with pytest.raises(ConfigurationError, match=r"refused to list the secret scopes.*Invalid access token"):
        secrets.run(_args(host, "--no-prompt"))


def test_the_module_command_prints_one_json_summary(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, host = workspace
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)

    code = cli.main(["setup-secrets", "--scope", "team", "--host", host, "--no-prompt", "--json"])

    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["keys"] == [DEFAULT_KEYS[f] for f in DEFAULT_FIELDS]
    assert {scope for scope, _ in state.secrets} == {"team"}
    _assert_no_value_leaked(out + err)


def test_oauth_secrets_are_put_under_the_key_names_given_and_never_shown(
    workspace: tuple[Workspace, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, host = workspace
    for name, value in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)

    # The OAuth route: no account key (an empty key name skips it).
    summary = secrets.run(_args(host, "--no-prompt", *OAUTH_FLAGS, "--storage-key-secret", ""))

    assert summary["keys"] == [
        DEFAULT_KEYS["appinsights_secret"],
        DEFAULT_KEYS["storage_account_secret"],
        DEFAULT_KEYS["storage_container_secret"],
        "adls-client-id",
        "adls-client-secret",
        "adls-tenant-id",
    ]
    assert state.secrets[("diabetes-spark", "adls-client-id")] == OAUTH_VALUES["AZURE_CLIENT_ID"]
    assert state.secrets[("diabetes-spark", "adls-client-secret")] == OAUTH_VALUES["AZURE_CLIENT_SECRET"]
    assert state.secrets[("diabetes-spark", "adls-tenant-id")] == OAUTH_VALUES["AZURE_TENANT_ID"]
    assert ("diabetes-spark", DEFAULT_KEYS["storage_key_secret"]) not in state.secrets
    assert "**REDACTED**" in _log_text(caplog)
    out, err = capfd.readouterr()
    for text in (out, err, _log_text(caplog), json.dumps(summary)):
        _assert_no_value_leaked(text)


def test_the_oauth_secrets_are_skipped_by_default_and_without_an_account(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    for name, value in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, value)
    for field in ("storage_client_id_secret", "storage_client_secret_secret", "storage_tenant_id_secret"):
        assert DEFAULT_KEYS[field] == ""

    assert "adls-client-id" not in secrets.run(_args(host, "--no-prompt"))["keys"]
    summary = secrets.run(_args(host, "--no-prompt", *OAUTH_FLAGS, "--storage-account-secret", ""))

    assert summary["keys"] == [DEFAULT_KEYS["appinsights_secret"]]
    assert not any(key.startswith("adls-client") or key == "adls-tenant-id" for _, key in state.secrets)


def test_only_some_oauth_key_names_is_an_error_before_contacting_the_workspace(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    for name, value in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match="OAuth to ADLS Gen2 needs all three of") as info:
        secrets.run(_args(host, "--no-prompt", "--storage-client-id-secret", "adls-client-id"))
    for flag in OAUTH_FLAGS[::2]:
        assert flag in str(info.value)
    assert state.requests == []


def test_a_tenant_given_as_a_domain_is_accepted(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    for name, value in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso.onmicrosoft.com")

    secrets.run(_args(host, "--no-prompt", *OAUTH_FLAGS))

    assert state.secrets[("diabetes-spark", "adls-tenant-id")] == "contoso.onmicrosoft.com"


def test_the_client_secret_is_redacted_from_a_workspace_error(
    workspace: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, host = workspace
    for name, value in {**VALUES, **OAUTH_VALUES}.items():
        monkeypatch.setenv(name, value)
    secret = OAUTH_VALUES["AZURE_CLIENT_SECRET"]
    original = state.handle

    def echo_the_secret(method: str, path: str, headers: Any, body: Any) -> tuple[int, dict[str, Any]]:
        if path == "/api/2.0/secrets/put" and body["key"] == "adls-client-secret":
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"bad value {secret} for key"}
        return original(method, path, headers, body)

    monkeypatch.setattr(state, "handle", echo_the_secret)
    with pytest.raises(ConfigurationError, match="could not put secret 'adls-client-secret'") as info:
        secrets.run(_args(host, "--no-prompt", *OAUTH_FLAGS))
    assert secret not in str(info.value)
    assert "bad value" in str(info.value)


def test_without_databricks_sdk_it_says_to_install_the_deploy_extra(
    workspace: tuple[Workspace, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, host = workspace
    for name, value in VALUES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "databricks.sdk", None)  # import fails as if it were not installed

    with pytest.raises(ConfigurationError, match=re.escape("pip install 'diabetes_spark[deploy]'")):
        secrets.run(_args(host, "--no-prompt"))
    assert cli.main(["setup-secrets", "--scope", "s", "--host", host, "--no-prompt"]) == 2
    assert "pip install 'diabetes_spark[deploy]'" in capsys.readouterr().err
    assert state.requests == []
