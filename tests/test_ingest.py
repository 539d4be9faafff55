from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from diabetes_spark import cli, schemas, storage

HEADER = "AGE,SEX,BMI,BP,S1,S2,S3,S4,S5,S6,Y"
GOOD = "59,F,32.1,101,157,93.2,38,4,4.8598,87,151"


def _ingest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(["ingest", *args, "--json"])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines else None), err


def test_sample_ingest_reconciles_and_records_reasons(spark, sample_dir: Path, tmp_path: Path, capsys) -> None:
    table = str(tmp_path / "raw")
    code, summary, err = _ingest(capsys, "--source", str(sample_dir / "diabetes.csv"), "--table", table)
    assert code == 0, err
    assert summary == {
        "rows_in": 442,
        "rows_written": 437,
        "rows_rejected": 5,
        "table": table,
        "rejects_table": table + "_rejects",
        "ingest_id": summary["ingest_id"],
    }
    written = storage.read_table(spark, storage.resolve(table))
    assert written.count() == 437
    assert written.schema.fieldNames() == schemas.load_schema("training_raw").fieldNames()
    # The blanked values were kept as nulls for imputation, not rejected.
    assert written.filter(F.col("BMI").isNull()).count() == 1
    rejects = storage.read_table(spark, storage.resolve(table + "_rejects"))
    expected = spark.createDataFrame(
        [
            ("BMI: cannot parse 'n/a' as double",),
            ("S5: cannot parse '4.2.1' as double",),
            ("AGE: cannot parse 'sixty' as double",),
            ("BP: cannot parse 'high' as double",),
            ("Y: missing (required)",),
        ],
        "reason string",
    )
    assert_df_equality(rejects.select("reason"), expected, ignore_row_order=True, ignore_nullable=True)
    assert rejects.select("batch_id").distinct().collect()[0][0] == summary["ingest_id"]


def test_append_adds_and_overwrite_replaces(spark, tmp_path: Path, capsys) -> None:
    """Each new input is appended; the same input appended again is recognised (see tests/test_misuse.py)."""
    table = str(tmp_path / "t")
    for name, mode, expected_rows in (("in.csv", "append", 1), ("next.csv", "append", 2), ("in.csv", "overwrite", 1)):
        source = tmp_path / name
        source.write_text(f"{HEADER}\n{GOOD}\n{GOOD.replace('59', 'x')}\n")
        code, summary, _ = _ingest(capsys, "--source", str(source), "--table", table, "--mode", mode)
        assert code == 0 and summary["rows_written"] == 1 and summary["rows_rejected"] == 1
        assert storage.read_table(spark, storage.resolve(table)).count() == expected_rows
        assert storage.read_table(spark, storage.resolve(table + "_rejects")).count() == expected_rows


def test_custom_rejects_table_and_extra_columns_pass_through(spark, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"patient,{HEADER}\np1,{GOOD}\n")
    code, _, _ = _ingest(
        capsys, "--source", str(source), "--table", str(tmp_path / "t"), "--rejects", str(tmp_path / "bad")
    )
    assert code == 0
    written = storage.read_table(spark, storage.resolve(str(tmp_path / "t")))
    assert written.columns[-1] == "patient" and written.first()["patient"] == "p1"
    assert storage.table_exists(spark, storage.resolve(str(tmp_path / "bad")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        (f"{HEADER}\n", "has no data rows"),
        ("AGE,SEX,BMI\n1,M,2\n", "missing required column(s) ['BP', 'S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'Y']"),
    ],
)
def test_bad_sources_fail_with_one_line_and_write_nothing(
    spark, tmp_path: Path, capsys, content: str | None, message: str
) -> None:
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_text(content)
    table = tmp_path / "t"
    code, summary, err = _ingest(capsys, "--source", str(source), "--table", str(table))
    assert code == 2 and summary is None
    assert err.count("\n") == 1 and err.startswith("diabetes-spark ingest: error:") and message in err
    assert not table.exists() and not (tmp_path / "t_rejects").exists()


def test_reject_threshold_fails_before_writing(spark, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"{HEADER}\n{GOOD}\n{GOOD.replace('F', 'F').replace('32.1', 'x')}\n")
    code, _, err = _ingest(
        capsys, "--source", str(source), "--table", str(tmp_path / "t"), "--max-reject-fraction", "0.4"
    )
    assert code == 2
    assert "1 of 2 rows (50.0%)" in err and "\"BMI: cannot parse 'x' as double\" x1" in err
    assert not (tmp_path / "t").exists()
