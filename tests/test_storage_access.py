"""Storage access, in the order Databricks recommends it: Unity Catalog (no Spark setting at all),
a service principal with OAuth (its settings, for that account only), the shared account key."""

from __future__ import annotations

import pytest

from diabetes_spark import adls
from diabetes_spark.local_dbutils import LocalDbutils, secret_env_name
from diabetes_spark.notebook import NotebookContext
from diabetes_spark.params import NotebookParams
from diabetes_spark.telemetry import COMPONENT_TRAIN

SCOPE = NotebookParams().secret_scope
SUFFIX = "lakeacct.dfs.core.windows.net"
SECRETS = {
    "adls-account-name": "lakeacct",
    "adls-container-name": "lake",
    "adls-account-key": "a2V5LWZvci10aGUtYWNjb3VudA==",
    "sp-client-id": "11111111-2222-3333-4444-555555555555",
    "sp-client-secret": "client~secret.value",
    "sp-tenant-id": "66666666-7777-8888-9999-000000000000",
}
OAUTH = {
    "storage_client_id_secret": "sp-client-id",
    "storage_client_secret_secret": "sp-client-secret",
    "storage_tenant_id_secret": "sp-tenant-id",
}
NO_STORAGE = {"storage_account_secret": "", "storage_container_secret": "", "storage_key_secret": ""}


def _azure_settings(spark) -> dict[str, str]:
    return {k: v for k, v in spark.conf.getAll.items() if k.startswith(("fs.azure", "spark.hadoop.fs.azure"))}


@pytest.fixture
def open_context(spark, monkeypatch: pytest.MonkeyPatch):
    """Open a notebook context with ``widgets``; returns the Azure settings it added and its root."""
    for key, value in SECRETS.items():
        monkeypatch.setenv(secret_env_name(SCOPE, key), value)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    opened = []

    def open_with(widgets: dict[str, str]) -> tuple[dict[str, str], str | None]:
        before = _azure_settings(spark)
        dbutils = LocalDbutils({"appinsights_secret": "", **widgets})
        for name, default in NotebookParams.__dataclass_fields__.items():
            dbutils.widgets.text(name, str(default.default))
        context = NotebookContext.open(spark, dbutils, component=COMPONENT_TRAIN)
        opened.append(context)
        added = {k: v for k, v in _azure_settings(spark).items() if before.get(k) != v}
        return added, context.storage_root

    yield open_with
    for context in opened:
        context.close()
    for key in _azure_settings(spark):
        spark.conf.unset(key)


def test_with_every_storage_widget_empty_no_spark_setting_is_made(open_context) -> None:
    assert open_context(NO_STORAGE) == ({}, None)


def test_an_external_location_needs_only_the_container_root(open_context) -> None:
    added, root = open_context({"storage_key_secret": ""})
    assert (added, root) == ({}, "abfss://lake@lakeacct.dfs.core.windows.net/")


def test_a_service_principal_signs_in_with_oauth_for_that_account_only(open_context) -> None:
    added, root = open_context(OAUTH)
    assert added == {
        f"fs.azure.account.auth.type.{SUFFIX}": "OAuth",
        f"fs.azure.account.oauth.provider.type.{SUFFIX}": "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
        f"fs.azure.account.oauth2.client.id.{SUFFIX}": SECRETS["sp-client-id"],
        f"fs.azure.account.oauth2.client.secret.{SUFFIX}": SECRETS["sp-client-secret"],
        f"fs.azure.account.oauth2.client.endpoint.{SUFFIX}": f"https://login.microsoftonline.com/{SECRETS['sp-tenant-id']}/oauth2/token",
    }
    assert root == "abfss://lake@lakeacct.dfs.core.windows.net/"


def test_the_account_key_is_the_last_route(open_context) -> None:
    added, _ = open_context({})
    assert added == {adls.adls_conf_key("lakeacct"): SECRETS["adls-account-key"]}


def test_oauth_with_a_missing_secret_names_it(open_context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secret_env_name(SCOPE, "sp-tenant-id"))
    with pytest.raises(Exception, match=r"secret 'sp-tenant-id' is missing from secret scope 'diabetes-spark'"):
        open_context(OAUTH)
