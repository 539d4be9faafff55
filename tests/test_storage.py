from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from chispa import assert_df_equality

from diabetes_spark import adls, delta_writes, errors, storage
from diabetes_spark.errors import InputError, ParamError
from diabetes_spark.redaction import SPARK_REDACTION_REGEX as REDACTION_REGEX
from diabetes_spark.storage import TableRef


@pytest.mark.parametrize(
    ("ref", "base", "expected"),
    [
        (
            "abfss://c@acct.dfs.core.windows.net/gold/preds",
            None,
            TableRef("delta", "abfss://c@acct.dfs.core.windows.net/gold/preds"),
        ),
        ("dbfs:/mnt/x/table", None, TableRef("delta", "dbfs:/mnt/x/table")),
        ("/tmp/lake/raw", None, TableRef("delta", "/tmp/lake/raw")),
        ("lake/raw", None, TableRef("delta", os.path.abspath("lake/raw"))),
        (
            "gold/preds",
            "abfss://c@acct.dfs.core.windows.net/",
            TableRef("delta", "abfss://c@acct.dfs.core.windows.net/gold/preds"),
        ),
        ("/abs/preds", "abfss://c@acct.dfs.core.windows.net", TableRef("delta", "/abs/preds")),
        ("main.diabetes.predictions", None, TableRef("table", "main.diabetes.predictions")),
        ("diabetes.predictions", "abfss://c@a.dfs.core.windows.net", TableRef("table", "diabetes.predictions")),
        ("data/in.csv", None, TableRef("csv", os.path.abspath("data/in.csv"))),
        ("in.csv", "abfss://c@a.dfs.core.windows.net", TableRef("csv", "abfss://c@a.dfs.core.windows.net/in.csv")),
        (
            "abfss://c@a.dfs.core.windows.net/x.PARQUET",
            None,
            TableRef("parquet", "abfss://c@a.dfs.core.windows.net/x.PARQUET"),
        ),
    ],
)
def test_resolve(ref: str, base: str | None, expected: TableRef) -> None:
    assert storage.resolve(ref, base=base) == expected


def test_a_relative_path_is_refused_on_databricks_without_a_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    with pytest.raises(ParamError, match=r"relative path 'lake/raw' has no root on Databricks: give a catalog"):
        storage.resolve("lake/raw")
    assert storage.resolve("lake/raw", base="abfss://c@a.dfs.core.windows.net") == TableRef(
        "delta", "abfss://c@a.dfs.core.windows.net/lake/raw"
    )


def test_resolve_rejects_empty() -> None:
    with pytest.raises(InputError, match="empty table reference"):
        storage.resolve("  ")


def test_sibling_table() -> None:
    assert storage.resolve("lake/preds/").sibling("_rejects") == TableRef(
        "delta", os.path.abspath("lake/preds_rejects")
    )
    assert storage.resolve("main.s.preds").sibling("_rejects") == TableRef("table", "main.s.preds_rejects")


def test_abfss_uri_and_conf_key() -> None:
    assert adls.abfss_uri("acct", "cont", "/gold/x") == "abfss://cont@acct.dfs.core.windows.net/gold/x"
    assert adls.adls_conf_key("acct") == "fs.azure.account.key.acct.dfs.core.windows.net"
    with pytest.raises(InputError, match="account and a container"):
        adls.abfss_uri("", "cont")


def test_configure_adls_sets_the_dfs_key_and_abfss_resolves(spark) -> None:
    adls.configure_adls(spark, "acct", "c2VjcmV0LWtleQ==")
    try:
        assert spark.conf.get("fs.azure.account.key.acct.dfs.core.windows.net") == "c2VjcmV0LWtleQ=="
        # The hadoop-azure jar is on the classpath: abfss:// maps to the ABFS file system.
        hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
        fs_class = spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("abfss", hadoop_conf)
        assert fs_class.getName() == "org.apache.hadoop.fs.azurebfs.SecureAzureBlobFileSystem"
        # And the key is redacted wherever Spark redacts configuration.
        assert spark.conf.get("spark.redaction.regex") == REDACTION_REGEX
    finally:
        spark.conf.unset("fs.azure.account.key.acct.dfs.core.windows.net")


def test_write_delta_counts_from_the_commit_and_replaces_where(spark, tmp_path: Path) -> None:
    ref = storage.resolve(str(tmp_path / "t"))
    first = spark.createDataFrame([("a", 1), ("a", 2), ("b", 3)], "batch string, v int")
    assert delta_writes.write_delta(first, ref) == 3
    assert storage.delta_version(spark, ref) == 0
    again = spark.createDataFrame([("a", 9)], "batch string, v int")
    assert delta_writes.write_delta(again, ref, mode="overwrite", replace_where="batch = 'a'") == 1
    expected = spark.createDataFrame([("a", 9), ("b", 3)], "batch string, v int")
    assert_df_equality(storage.read_table(spark, ref), expected, ignore_row_order=True, ignore_nullable=True)
    assert storage.delta_version(spark, ref) == 1


def test_table_properties_are_set_when_a_write_creates_the_table(spark, tmp_path: Path) -> None:
    ref = storage.resolve(str(tmp_path / "t"))
    df = spark.createDataFrame([("a", 1, "x"), ("b", 2, "y")], "batch string, v int, note string")
    delta_writes.write_delta(df, ref, table_properties={"delta.dataSkippingStatsColumns": "batch,v"})
    delta_writes.write_delta(
        df, ref, table_properties={"delta.dataSkippingStatsColumns": "note"}
    )  # exists: kept as it is
    assert spark.sql(f"DESCRIBE DETAIL delta.`{ref.location}`").first()["properties"] == {
        "delta.dataSkippingStatsColumns": "batch,v"
    }
    log = spark.read.json(str(tmp_path / "t" / "_delta_log" / "*.json")).where("add IS NOT NULL")
    stats = [json.loads(s) for (s,) in log.select("add.stats").collect()]
    assert len(stats) >= 2 and all(set(s["minValues"]) == {"batch", "v"} for s in stats)


def test_partition_columns_are_set_when_a_write_creates_the_table(spark, tmp_path: Path) -> None:
    ref, plain = storage.resolve(str(tmp_path / "t")), storage.resolve(str(tmp_path / "plain"))
    df = spark.createDataFrame([("a", 1), ("b", 2)], "batch string, v int")
    delta_writes.write_delta(df, ref, partition_by=("batch",))
    again = spark.createDataFrame([("a", 9)], "batch string, v int")
    assert (
        delta_writes.write_delta(again, ref, mode="overwrite", replace_where="batch = 'a'", partition_by=("batch",))
        == 1
    )
    expected = spark.createDataFrame([("a", 9), ("b", 2)], "batch string, v int")
    assert_df_equality(storage.read_table(spark, ref), expected, ignore_row_order=True, ignore_nullable=True)
    assert sorted(p.name for p in (tmp_path / "t").glob("batch=*")) == ["batch=a", "batch=b"]
    # An existing table keeps its layout: an unpartitioned one takes the same write as it is.
    delta_writes.write_delta(df, plain)
    assert (
        delta_writes.write_delta(again, plain, mode="overwrite", replace_where="batch = 'a'", partition_by=("batch",))
        == 1
    )
    assert_df_equality(storage.read_table(spark, plain), expected, ignore_row_order=True, ignore_nullable=True)
    layouts = [spark.sql(f"DESCRIBE DETAIL delta.`{r.location}`").first()["partitionColumns"] for r in (ref, plain)]
    assert layouts == [["batch"], []]


def test_catalog_table_names_round_trip(spark) -> None:
    spark.sql("CREATE SCHEMA IF NOT EXISTS storage_test")
    ref = storage.resolve("storage_test.numbers")
    df = spark.createDataFrame([(1,), (2,)], "n int")
    assert delta_writes.write_delta(df, ref, mode="overwrite") == 2
    assert_df_equality(storage.read_table(spark, ref), df, ignore_row_order=True, ignore_nullable=True)
    assert storage.delta_version(spark, ref) == 0


def test_reading_a_missing_input_is_a_clear_error(spark, tmp_path: Path) -> None:
    for ref in (str(tmp_path / "nope"), str(tmp_path / "nope.csv"), "storage_test.nope"):
        with pytest.raises(InputError, match="does not exist"):
            storage.read_table(spark, storage.resolve(ref))
    assert storage.delta_version(spark, storage.resolve(str(tmp_path / "nope"))) is None


def test_delta_version_is_none_only_where_there_is_no_delta_table(spark, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.csv").write_text("a\n1\n")
    (tmp_path / "file").write_text("not a table")
    for path in (tmp_path / "nope", tmp_path / "folder", tmp_path / "file"):
        assert storage.delta_version(spark, TableRef("delta", str(path))) is None, path
    # A store that cannot be reached is not "no table": the writer would otherwise create one anew.
    with pytest.raises(errors.spark_failures()):
        storage.delta_version(spark, TableRef("delta", "nosuchscheme://bucket/table"))
    with pytest.raises(errors.spark_failures()):
        storage.table_exists(spark, TableRef("delta", "nosuchscheme://bucket/table"))


def test_writing_to_a_csv_is_refused(spark, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write Delta to the csv file"):
        delta_writes.write_delta(spark.range(1), storage.resolve(str(tmp_path / "x.csv")))


def test_sample_references_resolve_to_the_shipped_files() -> None:
    ref = storage.resolve("sample:scoring_batch.csv")
    assert ref.kind == "csv" and Path(ref.location.removeprefix("file:")).read_text().startswith("patient_id,AGE,SEX")
    with pytest.raises(
        InputError, match=r"no sample named 'nope\.csv'; shipped samples: diabetes\.csv, scoring_batch\.csv"
    ):
        storage.resolve("sample:nope.csv")


def test_an_empty_replace_where_that_changes_nothing_counts_zero(spark, tmp_path: Path) -> None:
    ref = storage.resolve(str(tmp_path / "t"))
    delta_writes.write_delta(spark.createDataFrame([("a", 1)], "batch string, v int"), ref)
    empty = spark.createDataFrame([], "batch string, v int")
    assert delta_writes.write_delta(empty, ref, mode="overwrite", replace_where="batch = 'b'", expected_rows=0) == 0
    assert delta_writes.write_delta(empty, ref, mode="overwrite", replace_where="batch = 'a'", expected_rows=0) == 0
    assert storage.read_table(spark, ref).count() == 0


def test_the_input_fingerprint_hashes_paths_sizes_and_modification_times(spark, tmp_path: Path) -> None:
    import hashlib
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in (("b.csv", "AGE\n1\n"), ("a.csv", "AGE\n22\n")):
        (folder / name).write_text(text)
    df = spark.read.option("header", True).csv(str(folder))

    def expected() -> str:  # the same formula, from the operating system's own file status
        names = sorted(df.inputFiles())
        stats = [os.stat(folder / n.rsplit("/", 1)[-1]) for n in names]
        parts = [f"{n}|{s.st_size}|{s.st_mtime_ns // 1_000_000}" for n, s in zip(names, stats)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]

    first = storage.input_fingerprint(df)
    assert first == expected()
    os.utime(folder / "a.csv", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # touched: a new batch
    again = spark.read.option("header", True).csv(str(folder))
    assert storage.input_fingerprint(again) == expected() != first


def test_an_unreadable_file_is_an_input_error_through_the_classic_only_fallback(spark, tmp_path: Path) -> None:
    """Classic pyspark leaves some JVM failures unconverted (py4j's error): ``spark_failures`` catches
    them besides pyspark's own, so a file Spark cannot read the columns of is still a clear error."""
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(InputError, match=r"cannot read the columns of parquet input .*broken\.parquet") as raised:
        storage.read_table(spark, storage.resolve(str(tmp_path / "broken.parquet")))
    assert isinstance(raised.value.__cause__, errors.spark_failures())
    assert {t.__module__.split(".")[0] for t in errors.spark_failures()} == {"pyspark", "py4j"}


def test_history_reads_delta_commits_newest_first_by_sql(spark, tmp_path: Path) -> None:
    ref = storage.resolve(str(tmp_path / "h"))
    for rows in (1, 2):
        delta_writes.write_delta(spark.range(rows).toDF("n"), ref, mode="overwrite")
    assert [r.version for r in storage.history(spark, ref).collect()] == [1, 0]
    assert storage.history(spark, ref, limit=1).count() == 1
    assert not storage.table_exists(spark, storage.resolve(str(tmp_path / "nothing")))


def test_cached_persists_on_classic_spark_for_the_block_only(spark) -> None:
    from diabetes_spark.runtime import cached, is_connect

    df = spark.range(3)
    assert not is_connect(spark)
    with cached(df) as same:
        assert same is df and df.storageLevel.useMemory and df.storageLevel.useDisk
    assert not df.storageLevel.useMemory and not df.storageLevel.useDisk
