"""Table references Spark must read as written: catalog names that need quoting, shipped samples."""

from __future__ import annotations

import pytest

from diabetes_spark import storage
from diabetes_spark.errors import InputError


def test_a_table_name_with_a_hyphen_is_quoted_for_sql_and_the_catalog(spark) -> None:
    """Unity Catalog allows ``main.my-schema.diabetes-raw``; unquoted, Spark cannot even parse it."""
    ref = storage.resolve("main.my-schema.diabetes-raw")
    assert (ref.kind, ref.location) == ("table", "main.my-schema.diabetes-raw")
    assert ref.identifier == "`main`.`my-schema`.`diabetes-raw`"
    assert storage.resolve("/data/odd`name").identifier == "delta.`/data/odd``name`"

    # Local Spark's catalog refuses a hyphen in a table it creates, so one is looked up that does not exist:
    # the quoted name parses, and the answer is "no such table", not a syntax error.
    missing = storage.resolve("default.diabetes-raw")
    assert storage.delta_version(spark, missing) is None
    assert not storage.table_exists(spark, missing)
    with pytest.raises(InputError, match=r"input default\.diabetes-raw does not exist"):
        storage.read_table(spark, missing)


def test_a_quoted_table_name_reads_and_describes_the_table(spark, tmp_path) -> None:
    spark.sql("CREATE SCHEMA IF NOT EXISTS table_names")
    name = "table_names.quoted_read"
    spark.createDataFrame([(1, "a")], "id int, v string").write.format("delta").mode("overwrite").saveAsTable(name)
    ref = storage.resolve(name)
    assert storage.read_table(spark, ref, pinned=True).collect() == [(1, "a")]
    assert storage.delta_version(spark, ref) == 0


def test_a_sample_is_a_file_uri_so_a_cluster_does_not_look_for_it_in_dbfs(spark) -> None:
    ref = storage.resolve("sample:scoring_batch.csv")
    assert ref.kind == "csv" and ref.location.startswith("file:/") and ref.location.endswith("/scoring_batch.csv")
    assert storage.read_table(spark, ref).first()["patient_id"] == "P0006"
