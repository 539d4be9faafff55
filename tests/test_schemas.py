from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from diabetes_spark import schemas
from diabetes_spark.errors import SchemaError

ROOT = Path(__file__).resolve().parent.parent
RAW = schemas.load_schema("training_raw")
COLS = RAW.fieldNames()
STR_SCHEMA = StructType([StructField(c, StringType()) for c in [*COLS, "id"]])
GOOD = ["59", "F", "32.1", "101", "157", "93.2", "38", "4", "4.8598", "87", "151"]


def _row(**changes: str | None) -> tuple:
    values = dict(zip(COLS, GOOD))
    values.update(changes)
    return tuple(values[c] for c in COLS)


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_schema_files_are_spark_json_and_round_trip(name: str) -> None:
    text = json.loads((ROOT / "schemas" / f"{name}.json").read_text())
    assert schemas.load_schema(name).jsonValue() == text


def test_schema_columns() -> None:
    assert schemas.feature_names() == ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
    assert [*schemas.feature_names(), "Y"] == COLS
    assert schemas.load_schema("rejects").fieldNames() == ["record", "reason", "source", "batch_id", "rejected_at"]


def test_split_keeps_empties_as_null_and_rejects_every_bad_value(spark) -> None:
    rows = [
        (*_row(), "ok"),
        (*_row(BMI="", S6="  "), "empty-values"),
        (*_row(BMI="n/a"), "unparseable"),
        (*_row(Y=None), "no-label"),
        (*_row(AGE="NaN"), "nan"),
        (*_row(BP="Infinity", S1="1e400"), "infinite"),
        (*_row(S5="x", Y=""), "two-reasons"),
        (*_row(SEX="f"), "lower-case-sex"),
    ]
    df = spark.createDataFrame(rows, STR_SCHEMA)
    valid, rejected = schemas.split_valid(df, RAW, required=("Y",), source="src", batch_id="b1")

    num = [float(v) if i != 1 else v for i, v in enumerate(GOOD)]
    expected_valid = spark.createDataFrame(
        [
            (*num, "ok"),
            (*[None if c in ("BMI", "S6") else v for c, v in zip(COLS, num)], "empty-values"),
            (*num, "lower-case-sex"),
        ],
        StructType([*RAW.fields, StructField("id", StringType())]),
    )
    assert_df_equality(valid, expected_valid, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)

    got = rejected.select(F.get_json_object("record", "$.id").alias("id"), "reason", "source", "batch_id")
    expected_rejected = spark.createDataFrame(
        [
            ("unparseable", "BMI: cannot parse 'n/a' as double"),
            ("no-label", "Y: missing (required)"),
            ("nan", "AGE: not a finite number"),
            ("infinite", "BP: not a finite number; S1: not a finite number"),
            ("two-reasons", "S5: cannot parse 'x' as double; Y: missing (required)"),
        ],
        "id string, reason string",
    ).withColumns({"source": F.lit("src"), "batch_id": F.lit("b1")})
    assert_df_equality(got, expected_rejected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)
    assert rejected.schema.fieldNames() == schemas.load_schema("rejects").fieldNames()


def test_record_keeps_the_row_as_read(spark) -> None:
    df = spark.createDataFrame([(*_row(BMI="abc", Y=None), "x1")], STR_SCHEMA)
    _, rejected = schemas.split_valid(df, RAW, required=("Y",), source="s", batch_id="b")
    record = json.loads(rejected.first()["record"])
    assert record == {**dict(zip(COLS, _row(BMI="abc", Y=None))), "id": "x1"}


def test_typed_input_passes_and_nan_is_rejected(spark) -> None:
    typed = StructType([StructField(c, StringType() if c == "SEX" else DoubleType()) for c in COLS])
    df = spark.createDataFrame([_row_typed(), _row_typed(BMI=float("nan"))], typed)
    valid, rejected = schemas.split_valid(df, RAW, required=("Y",), source="s", batch_id="b")
    assert_df_equality(valid, spark.createDataFrame([_row_typed()], RAW), ignore_nullable=True, ignore_metadata=True)
    assert [r.reason for r in rejected.collect()] == ["BMI: not a finite number"]


def _row_typed(**changes: float) -> tuple:
    values = {c: (v if c == "SEX" else float(v)) for c, v in zip(COLS, GOOD)}
    values.update(changes)
    return tuple(values[c] for c in COLS)


def test_missing_column_lists_missing_and_present(spark) -> None:
    df = spark.createDataFrame([("1", "M")], "age string, sex string")
    with pytest.raises(SchemaError) as info:
        schemas.split_valid(df, RAW, source="s", batch_id="b")
    message = str(info.value)
    assert "missing required column(s) ['BMI', 'BP', 'S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'Y']" in message
    assert "present: ['age', 'sex']" in message


def test_columns_match_case_insensitively(spark) -> None:
    lower = StructType([StructField(c.lower(), StringType()) for c in COLS])
    valid, _ = schemas.split_valid(spark.createDataFrame([_row()], lower), RAW, source="s", batch_id="b")
    assert valid.columns == COLS


def test_malformed_csv_line_is_rejected_with_its_text(spark, tmp_path: Path) -> None:
    from diabetes_spark import storage

    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLS) + "\n" + ",".join(GOOD) + "\n" + "1,2,3\n")
    df = storage.read_table(spark, storage.resolve(str(path)))
    valid, rejected = schemas.split_valid(df, RAW, required=("Y",), source="s", batch_id="b")
    assert valid.count() == 1
    assert [(r.record, r.reason.split(";")[0]) for r in rejected.collect()] == [
        ("1,2,3", "malformed line: expected 11 comma-separated fields")
    ]
