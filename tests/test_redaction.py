"""The one scrubber (:class:`~diabetes_spark.redaction.Redactor`), and Spark's own redaction, with
the session's ``spark.redaction.regex``, hiding Azure storage secrets.

Spark hides a setting's value in the UI, the event log and the History Server when the redaction
pattern matches its key or its value (``Utils.redact``). These cases call that very function in the
session's JVM, so they check what Spark shows, not a re-implementation. ``tests/test_cluster.py``
checks the same end to end, in a real event log and UI.
"""

from __future__ import annotations

import copy

import pytest

from diabetes_spark.adls import adls_conf_key
from diabetes_spark.redaction import SPARK_REDACTION_REGEX as REDACTION_REGEX
from diabetes_spark.redaction import Redactor

REDACTED = "*********(redacted)"

SECRET_SETTINGS = [
    pytest.param(adls_conf_key("acct"), "a2V5", id="account-key"),
    pytest.param(f"spark.hadoop.{adls_conf_key('acct')}", "a2V5", id="account-key-as-spark-hadoop"),
    pytest.param("fs.azure.account.key.acct.blob.core.windows.net", "a2V5", id="account-key-blob-endpoint"),
    pytest.param("spark.hadoop.fs.azure.sas.fixed.token.acct.dfs.core.windows.net", "sv=1&sig=x", id="sas-fixed-token"),
    pytest.param("fs.azure.sas.container.acct.blob.core.windows.net", "sv=1&sig=x", id="sas-per-container"),
    pytest.param(
        "spark.executorEnv.AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true", id="connection-string-env"
    ),
    pytest.param("spark.executorEnv.AZURE_STORAGE_SAS_TOKEN", "sv=1", id="sas-token-env"),
    pytest.param("spark.executorEnv.AZURE_STORAGE_KEY", "a2V5", id="storage-key-env"),
    pytest.param(
        "spark.executorEnv.STORAGE",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        id="storage-connection-string-value",
    ),
    pytest.param(
        "spark.executorEnv.BUS",
        "Endpoint=sb://x/;SharedAccessKeyName=r;SharedAccessKey=a2V5",
        id="shared-access-key-value",
    ),
    pytest.param(
        "spark.executorEnv.TELEMETRY",
        "InstrumentationKey=00000000-0000;IngestionEndpoint=https://x/",
        id="app-insights-value",
    ),
    pytest.param(
        "spark.executorEnv.INPUT",
        "https://acct.blob.core.windows.net/c/f.csv?sv=2024-11-04&sp=r&sig=abc",
        id="sas-url-value",
    ),
]

PLAIN_SETTINGS = [
    pytest.param("spark.sql.shuffle.partitions", "8", id="shuffle-partitions"),
    pytest.param("fs.azure.account.auth.type.acct.dfs.core.windows.net", "SharedKey", id="auth-type"),
    pytest.param("ipc.client.connect.max.retries.on.sasl", "5", id="sasl-is-not-sas"),
    pytest.param("spark.sql.warehouse.dir", "/data/kansas/warehouse", id="path-with-sas-letters"),
]


def test_scrub_returns_new_containers_and_leaves_the_callers_as_they_were() -> None:
    secret = "Sup3r+S3cret/AccountKey=="
    given = {"key": secret, secret: [f"with {secret}", (secret, 7)], "plain": {"n": 1}}
    before = copy.deepcopy(given)
    clean = Redactor([secret]).scrub(given)
    assert clean == {"key": "[REDACTED]", "[REDACTED]": ["with [REDACTED]", ("[REDACTED]", 7)], "plain": {"n": 1}}
    assert given == before
    clean["plain"]["n"] = 2  # a new container all the way down, also where nothing was redacted
    assert given["plain"] == {"n": 1}


def _redact(spark, key: str, value: str) -> str:
    """The value Spark shows for setting ``key=value`` under the session's configuration."""
    sc = spark.sparkContext
    jvm = sc._jvm
    pairs = jvm.java.util.ArrayList()
    pairs.add(jvm.scala.Tuple2(key, value))
    shown = jvm.org.apache.spark.util.Utils.redact(
        sc._jsc.sc().conf(), jvm.scala.jdk.javaapi.CollectionConverters.asScala(pairs).toSeq()
    )
    return shown.apply(0)._2()


def test_the_session_uses_the_extended_pattern(spark) -> None:
    assert spark.sparkContext.getConf().get("spark.redaction.regex") == REDACTION_REGEX


@pytest.mark.parametrize(("key", "value"), SECRET_SETTINGS)
def test_secret_settings_are_redacted(spark, key: str, value: str) -> None:
    assert _redact(spark, key, value) == REDACTED


@pytest.mark.parametrize(("key", "value"), PLAIN_SETTINGS)
def test_plain_settings_stay_readable(spark, key: str, value: str) -> None:
    assert _redact(spark, key, value) == value
