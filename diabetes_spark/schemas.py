"""Table schemas (``schemas/*.json``) and the split of input rows into valid and rejected.

Validation rules, the same for ingest, training and scoring:

* a required column missing from the input is a :class:`SchemaError` listing missing and present
  columns (matched case-insensitively);
* an empty value (or null) in a numeric column is kept as null: it is imputed later, not rejected;
* a value that cannot be parsed as its column's type, or is not a finite number, rejects the row;
* a null label (``Y`` for training) rejects the row;
* a malformed CSV line (wrong number of fields) rejects the row;
* a value of a type that is neither text nor a number (boolean, date, timestamp, binary, array...)
  in a numeric column rejects the row;
* columns outside the schema pass through untouched;
* an input whose column names are empty, repeated (case-insensitively) or reserved is a
  :class:`SchemaError`.

Each rejected row carries every reason that applies, joined by ``"; "``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import cast

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, NumericType, StringType, StructType

from diabetes_spark.errors import InputError, RejectThresholdError, SchemaError

SCHEMA_NAMES = ("training_raw", "scoring_input", "predictions", "rejects")
#: Column that Spark's CSV reader fills with the raw line when it cannot split it into the header's fields.
CORRUPT_RECORD = "_corrupt_record"
LABEL = "Y"
#: The model's output column, in the predictions schema and in every scored frame.
PREDICTION = "prediction"
CATEGORICAL = ("SEX",)
#: Marker columns added by :func:`annotate`.
REASON = "_reject_reason"
RECORD = "_reject_record"
#: Names of the columns :func:`annotate` adds: an input column of the same name would be ambiguous.
RESERVED = (REASON, RECORD)
_MAX_VALUE_CHARS = 40


def quoted(name: str) -> str:
    """``name`` as a back-quoted Spark identifier, for ``F.col`` and SQL expressions."""
    return "`" + name.replace("`", "``") + "`"


def column(name: str) -> Column:
    """The column named exactly ``name``. ``F.col`` parses its argument (``a.b`` is field ``b`` of
    ``a``, back-quotes quote), so an input column named ``a.b`` or ``x`y`` needs quoting to be found."""
    return F.col(quoted(name))


def finite(value: Column) -> Column:
    """True for a finite number, false for NaN and ±Infinity, null for null: one comparison per
    row, as Spark orders NaN above every number (cheaper than ``isnan`` plus ``isin``, which matters
    where Spark repeats the expression, e.g. a filter pushed below the projection computing it)."""
    return F.abs(value) <= F.lit(sys.float_info.max)


def _name_key(name: str) -> str:
    """``name`` as Spark compares column names by default: case-insensitively (``ς`` and ``σ`` too)."""
    return name.upper().lower()


def check_column_names(names: Sequence[str], where: str, *, reserved: Sequence[str] = ()) -> None:
    """Fail on column names Spark would rename, refuse or resolve ambiguously, before it does so
    half-way through a job: empty names, names repeated (case-insensitively), reserved names
    (:data:`RESERVED` and ``reserved``).

    Raises:
        SchemaError: Naming every offending column, where it was found, and what to do.
    """
    keys = [_name_key(n) for n in names]
    taken = {_name_key(n) for n in (*RESERVED, *reserved)}
    problems = []
    unnamed = [i + 1 for i, n in enumerate(names) if not n]
    if unnamed:
        problems.append(f"column(s) {unnamed} (counting from 1) have no name")
    repeated = sorted({n for n, k in zip(names, keys) if keys.count(k) > 1})
    if repeated:
        problems.append(f"column name(s) {repeated} appear more than once (names match case-insensitively)")
    clashing = sorted({n for n, k in zip(names, keys) if k in taken})
    if clashing:
        problems.append(f"column name(s) {clashing} are reserved for the validation's own columns")
    if problems:
        raise SchemaError(
            f"{where}: {'; '.join(problems)}. Give every column its own name (rename or drop the others); "
            f"columns: {list(names)}"
        )


def _schema_text(name: str) -> str:
    """Schema JSON from the wheel (``diabetes_spark._schemas``) or, in a source checkout, ``schemas/``."""
    try:
        return (resources.files("diabetes_spark._schemas") / f"{name}.json").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parent.parent / "schemas" / f"{name}.json").read_text(encoding="utf-8")


@cache
def load_schema(name: str) -> StructType:
    """Load one of :data:`SCHEMA_NAMES` as a Spark ``StructType``.

    Raises:
        ValueError: ``name`` is not a known schema.
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return StructType.fromJson(json.loads(_schema_text(name)))


def feature_names() -> list[str]:
    """Model input columns, in schema order."""
    return load_schema("scoring_input").fieldNames()


def numeric_feature_names() -> list[str]:
    """Numeric model input columns (everything but the categorical ones)."""
    return [c for c in feature_names() if c not in CATEGORICAL]


def align_columns(df: DataFrame, schema: StructType) -> DataFrame:
    """Rename input columns that match schema columns case-insensitively to the schema's spelling.

    Raises:
        SchemaError: A schema column is missing; the message lists missing and present columns.
    """
    present = {c.lower(): c for c in df.columns}
    missing = [f.name for f in schema.fields if f.name.lower() not in present]
    if missing:
        raise SchemaError(
            f"missing required column(s) {missing}; present: {df.columns}. "
            f"Expected columns {schema.fieldNames()} (any case); extra columns are allowed."
        )
    renames = {present[f.name.lower()]: f.name for f in schema.fields if present[f.name.lower()] != f.name}
    return df.withColumnsRenamed(renames) if renames else df


def _sql_try_cast(name: str, target: DataType) -> Column:
    """``try_cast`` of the trimmed text (empty as null) in SQL: Spark 3.5's Column has no ``try_cast`` (new in 4.0),
    and its ``__getattr__`` answers any name with a field reference, so the check looks at the class."""
    return F.expr(f"try_cast(nullif(trim({quoted(name)}), '') AS {target.simpleString()})")


def _parse(name: str, source: DataType, target: DataType) -> tuple[Column, Column]:
    """(typed value, reason or null) for one column; empty text becomes null, not a reject."""
    col = column(name)
    type_name = target.simpleString()
    if isinstance(source, StringType):
        text = F.trim(col)
        text = F.when(text == "", F.lit(None)).otherwise(text)
        if isinstance(target, StringType):
            return F.upper(text), F.lit(None).cast("string")
        value = text.try_cast(target) if hasattr(type(text), "try_cast") else _sql_try_cast(name, target)
        shown = F.substring(text, 1, _MAX_VALUE_CHARS)
        bad_parse = text.isNotNull() & value.isNull()
        reason = F.when(bad_parse, F.concat(F.lit(f"{name}: cannot parse '"), shown, F.lit(f"' as {type_name}")))
    elif isinstance(target, StringType):
        return F.upper(col.cast("string")), F.lit(None).cast("string")
    elif isinstance(source, NumericType):
        value = col.cast(target)
        reason = F.lit(None).cast("string")
    else:
        # A boolean, date, timestamp, binary or array is no measurement, whatever a cast makes of it.
        value = F.lit(None).cast(target)
        reason = F.when(col.isNotNull(), F.lit(f"{name}: {source.simpleString()} value is not a {type_name}"))
    if isinstance(target, NumericType):
        reason = F.coalesce(reason, F.when(~finite(value), F.lit(f"{name}: not a finite number")))
    return value, reason


def annotate(df: DataFrame, schema: StructType, *, required: Sequence[str] = ()) -> DataFrame:
    """Parse ``df`` against ``schema`` and mark each row with why it would be rejected (if at all).

    Args:
        df: Input rows, as read (CSV columns as strings, or typed columns from Delta/Parquet).
        schema: Expected columns and types (e.g. ``load_schema("training_raw")``).
        required: Columns that must not be null (e.g. the label), else the row is rejected.

    Returns:
        The schema's columns cast to their types, then the extra input columns untouched, then
        :data:`REASON` (null for a valid row) and :data:`RECORD` (the row as read, as JSON, filled
        only for rejected rows so valid rows cost nothing).

    Raises:
        SchemaError: A schema column is missing from ``df``; a column name is empty, repeated or
            reserved (see :func:`check_column_names`); ``_corrupt_record`` is not text.
    """
    check_column_names(df.columns, "input columns")
    has_corrupt = CORRUPT_RECORD in df.columns
    if has_corrupt and not isinstance(df.schema[CORRUPT_RECORD].dataType, StringType):
        raise SchemaError(
            f"input column {CORRUPT_RECORD!r} is {df.schema[CORRUPT_RECORD].dataType.simpleString()}: the name is "
            "reserved for the text of malformed CSV lines; rename the column"
        )
    data = align_columns(df, schema)
    input_types = {f.name: f.dataType for f in data.schema.fields}
    extras = [c for c in data.columns if c not in schema.fieldNames() and c != CORRUPT_RECORD]

    typed: list[Column] = []
    reasons: list[Column] = []
    if has_corrupt:
        expected = len(df.columns) - 1
        reasons.append(
            F.when(
                F.col(CORRUPT_RECORD).isNotNull(), F.lit(f"malformed line: expected {expected} comma-separated fields")
            )
        )
    for field in schema.fields:
        value, reason = _parse(field.name, input_types[field.name], field.dataType)
        typed.append(value.alias(field.name))
        reasons.append(reason)
        if field.name in required:
            reasons.append(F.when(value.isNull() & reason.isNull(), F.lit(f"{field.name}: missing (required)")))
    # The text is built only for a rejected row: a valid row (every reason null) costs a coalesce.
    reason = F.when(F.coalesce(*reasons).isNotNull(), F.concat_ws("; ", *reasons))
    record = F.to_json(
        F.struct(*[column(c) for c in data.columns if c != CORRUPT_RECORD]), {"ignoreNullFields": "false"}
    )
    if has_corrupt:
        record = F.coalesce(F.col(CORRUPT_RECORD), record)
    return data.select(
        *typed,
        *[column(c) for c in extras],
        reason.alias(REASON),
        F.when(reason.isNotNull(), record).alias(RECORD),
    )


def valid_rows(annotated: DataFrame) -> DataFrame:
    """The rows of an :func:`annotate` result that passed validation, without the marker columns."""
    return annotated.filter(F.col(REASON).isNull()).drop(REASON, RECORD)


def rejected_rows(annotated: DataFrame, *, source: str, batch_id: str) -> DataFrame:
    """The rejected rows of an :func:`annotate` result, in the ``rejects`` schema."""
    return annotated.filter(F.col(REASON).isNotNull()).select(
        F.col(RECORD).alias("record"),
        F.col(REASON).alias("reason"),
        F.lit(source).alias("source"),
        F.lit(batch_id).alias("batch_id"),
        F.current_timestamp().alias("rejected_at"),
    )


def split_valid(
    df: DataFrame,
    schema: StructType,
    *,
    required: Sequence[str] = (),
    source: str,
    batch_id: str,
) -> tuple[DataFrame, DataFrame]:
    """Split ``df`` into rows that conform to ``schema`` and rejected rows with their reasons.

    Returns:
        ``(valid, rejected)``: ``valid`` has the schema's columns cast to their types followed by the
        extra input columns untouched; ``rejected`` follows the ``rejects`` schema. See :func:`annotate`.
    """
    annotated = annotate(df, schema, required=required)
    return valid_rows(annotated), rejected_rows(annotated, source=source, batch_id=batch_id)


def reject_summary(annotated: DataFrame) -> tuple[int, int]:
    """``(rows_in, rows_rejected)`` of an :func:`annotate` result in one pass."""
    # An aggregate without grouping always returns one row; pyspark types first() as Row | None.
    row = cast(Row, annotated.agg(F.count(F.lit(1)), F.count(F.col(REASON))).first())
    return int(row[0]), int(row[1])


def top_reasons(annotated: DataFrame, limit: int = 5) -> list[tuple[str, int]]:
    """The most frequent rejection reasons with their counts."""
    rows = annotated.filter(F.col(REASON).isNotNull()).groupBy(REASON).count().orderBy(F.desc("count")).limit(limit)
    return [(r[0], int(r[1])) for r in rows.collect()]


def check_reject_fraction(annotated: DataFrame, rows_in: int, rows_rejected: int, *, limit: float, source: str) -> None:
    """Fail before anything is written when the input is empty or too much of it was rejected.

    Raises:
        InputError: The input has no rows.
        RejectThresholdError: ``rows_rejected / rows_in > limit``; the message has the counts and
            the most frequent reasons.
    """
    if rows_in == 0:
        raise InputError(f"input {source} has no data rows; nothing to do")
    if rows_rejected / rows_in > limit:
        reasons = "; ".join(f"{reason!r} x{count}" for reason, count in top_reasons(annotated))
        raise RejectThresholdError(
            f"{rows_rejected} of {rows_in} rows ({rows_rejected / rows_in:.1%}) of {source} were rejected, "
            f"above max_reject_fraction={limit:g}; nothing was written. Top reasons: {reasons}. "
            "Fix the input or raise max_reject_fraction."
        )
