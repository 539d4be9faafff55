"""ADLS Gen2 credentials in the Spark session's conf: the shared account key (legacy) or OAuth with a
service principal for one account. Unity Catalog access needs neither; serverless refuses both."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diabetes_spark.errors import ConfigurationError, InputError, error_condition

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def abfss_uri(account: str, container: str, path: str = "") -> str:
    """``abfss://<container>@<account>.dfs.core.windows.net/<path>`` for an ADLS Gen2 location."""
    if not account or not container:
        raise InputError(
            f"ADLS Gen2 needs an account and a container; got account={account!r}, container={container!r}"
        )
    return f"abfss://{container}@{account}.dfs.core.windows.net/{path.lstrip('/')}"


def adls_conf_key(account: str) -> str:
    """The Spark conf key that carries an ADLS Gen2 account key for the ``dfs`` endpoint."""
    return f"fs.azure.account.key.{account}.dfs.core.windows.net"


def configure_adls(spark: SparkSession, account: str, key: str) -> None:
    """Put an ADLS Gen2 shared access key into the session's conf (no mounts: they are legacy).

    The key is registered with :func:`redaction.hide_in_logs` first, so a DEBUG log of the py4j
    call that carries it shows ``[REDACTED]``. It is set without the ``spark.hadoop.`` prefix on
    purpose: Spark copies run-time settings whose names start with ``spark`` into every job's
    properties, and the event log records those unredacted unless they were in the configuration
    at start-up.
    """
    from diabetes_spark.redaction import hide_in_logs

    if not key:
        raise InputError(f"empty access key for storage account {account!r}")
    hide_in_logs(key)
    _set_storage_conf(spark, account, {adls_conf_key(account): key})


def adls_oauth_settings(account: str, *, client_id: str, client_secret: str, tenant: str) -> dict[str, str]:
    """The Spark settings that make a service principal sign in to one ADLS Gen2 account with OAuth
    (client credentials), leaving every other account as it is."""
    suffix = f"{account}.dfs.core.windows.net"
    return {
        f"fs.azure.account.auth.type.{suffix}": "OAuth",
        f"fs.azure.account.oauth.provider.type.{suffix}": "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
        f"fs.azure.account.oauth2.client.id.{suffix}": client_id,
        f"fs.azure.account.oauth2.client.secret.{suffix}": client_secret,
        f"fs.azure.account.oauth2.client.endpoint.{suffix}": f"https://login.microsoftonline.com/{tenant}/oauth2/token",
    }


def configure_adls_oauth(spark: SparkSession, account: str, *, client_id: str, client_secret: str, tenant: str) -> None:
    """Put :func:`adls_oauth_settings` into the session's conf; the client secret is hidden from
    logs first, as the account key is (see :func:`configure_adls`)."""
    from diabetes_spark.redaction import hide_in_logs

    if not (client_id and client_secret and tenant):
        raise InputError(f"OAuth to storage account {account!r} needs a client id, a client secret and a tenant id")
    hide_in_logs(client_secret)
    settings = adls_oauth_settings(account, client_id=client_id, client_secret=client_secret, tenant=tenant)
    _set_storage_conf(spark, account, settings)


def _set_storage_conf(spark: SparkSession, account: str, settings: dict[str, str]) -> None:
    """Set storage credentials in the session's conf. Serverless compute refuses such settings: the
    error then says to reach storage through Unity Catalog (its message is not shown: it could echo
    the secret)."""
    for key, value in settings.items():
        try:
            spark.conf.set(key, value)
        except Exception as e:
            raise ConfigurationError(
                f"this Spark session refuses storage credentials in its conf ({error_condition(e) or type(e).__name__}"
                f", setting {key.split('.' + account)[0]}); on serverless or standard-access compute reach "
                f"account {account!r} through a Unity Catalog external location or volume and leave the storage "
                "key and OAuth secrets empty"
            ) from None
