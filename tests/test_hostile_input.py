"""Hostile input, generated: every row is written or rejected, or the job fails cleanly.

For generated CSV files (headers in any order and case, missing, extra, duplicated, empty and unicode
column names; cells with numbers, empty strings, NaN/Infinity, 1e308/1e400, huge integers, unicode,
quotes, commas and newlines inside quotes, lines with too few or too many fields) and for generated
Delta and Parquet tables (columns of random types, NaN/Infinity, nulls), ingest and scoring either

* return with ``rows_in == written + rejected``, the Delta tables holding exactly that many rows of
  the batch, ``rows_in`` equal to the records of the input (counted here with Python's ``csv``
  module, or the rows generated) and, for a well-formed header, exactly the rejects predicted from
  how each value was generated; or
* raise a :class:`DiabetesSparkError` and write nothing.

Any other exception, a partial write or a miscount is a library bug. Every example writes to its own
paths, so examples are independent.

Hypothesis runs derandomized with a fixed example budget: the seed comes from each test's name and
code, so CI tests the same examples on every run, and the file keeps to its time budget.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from conftest import TRAINED_MODEL
from diabetes_spark import jobs, registry, schemas, scoring, storage
from diabetes_spark.errors import DiabetesSparkError, InputError, RejectThresholdError, SchemaError
from diabetes_spark.params import IngestParams, ScoreParams, TrainParams

pytestmark = pytest.mark.slow

MODEL = TRAINED_MODEL
EXPERIMENT = "hostile-input-tests"
RAW = schemas.load_schema("training_raw")
INPUT = schemas.load_schema("scoring_input")
#: Names the library adds to a frame it validates, and the columns a scoring output adds.
MARKERS = (schemas.CORRUPT_RECORD, schemas.REASON, schemas.RECORD)
SCORING_OUTPUT = (schemas.PREDICTION, *scoring.LINEAGE_COLUMNS)
#: Characters a Delta column name may not hold (without column mapping).
DELTA_INVALID = set(" ,;{}()\n\t=")

#: Derandomized (a seed derived from the test, so CI sees the same examples every run), no example
#: database, no per-example deadline (a Spark job takes ~0.3-2 s), a fixed budget per test.
HOSTILE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- generated values


@dataclass(frozen=True)
class Cell:
    """A generated value and what validation must make of it in a numeric column:
    ``number`` (valid), ``empty`` (null, kept), ``nonfinite`` or ``bad`` (rejects the row)."""

    value: Any
    kind: str

    def number(self) -> float | None:
        """The value as the double validation makes of it (``number`` and ``empty`` cells only)."""
        if self.kind == "empty":
            return None
        return float(self.value.strip(" ") if isinstance(self.value, str) else self.value)

    def text(self) -> str | None:
        """The value as the upper-cased text validation makes of a string column (None: no text)."""
        value = self.value.decode("utf-8", "replace") if isinstance(self.value, (bytes, bytearray)) else self.value
        return (value.strip(" ").upper() or None) if isinstance(value, str) else None


def _padded(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", " ", "  "]), core, st.sampled_from(["", " "])).map("".join)


#: Text with unicode, quotes, commas, semicolons and newlines (no control characters but ``\n``).
TEXT = st.lists(
    st.one_of(
        st.sampled_from(["\n", "\n", "\n", ",", '"', '""', " ", ";", "\u2028", "é", "名"]),
        st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=3),
    ),
    max_size=4,
).map("".join)
NUMBER_TEXT = _padded(
    st.one_of(
        st.integers(-(10**6), 10**6).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(
            ["1e308", "-1e308", "123456789012345678901234567890", "+5", ".5", "5.", "-0", "1e-400", "4.8598"]
        ),
    )
)
NONFINITE_TEXT = _padded(
    st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "+inf", "1e400", "-1e400", "1e309"])
)
BAD_TEXT = st.one_of(
    st.sampled_from(
        ["abc", "n/a", "4.2.1", "١٢", "½", "1,5", "--1", "1e", "e5", "1_000", "１２", '5"', "12 34", "NULL", "-"]
    ),
    TEXT.map(lambda s: "x" + s),  # a leading letter that no number starts with: never parses
)
_CELL_TEXTS = {
    "number": NUMBER_TEXT,
    "empty": st.sampled_from(["", " ", "   "]),
    "nonfinite": NONFINITE_TEXT,
    "bad": BAD_TEXT,
}
#: Mostly numbers, so that about half the rows of a dozen columns are valid.
TEXT_CELL = st.sampled_from(["number"] * 28 + ["empty"] * 3 + ["nonfinite", "bad"]).flatmap(
    lambda kind: st.builds(Cell, _CELL_TEXTS[kind], st.just(kind))
)
SEX_TEXT = st.one_of(st.sampled_from(["M", "F", "m", " f ", "X", ""]), TEXT)

#: Extra column names, in four groups drawn alike: ids, unicode, dotted and back-quoted names;
#: random names; names Delta refuses; names every job must refuse (empty, the library's own marker
#: names, names the scoring output adds, schema names again).
NAME_ALPHABET = st.sampled_from(list("abcxyzAGE_019.`éü名ø"))
BENIGN_NAME = st.sampled_from(["patient_id", "note", "Ünïcødé_名前", "a.b", "`q`"])
DELTA_REFUSED_NAME = st.sampled_from(["a b", "x,y", "(n)", "k=v"])
REFUSED_NAME = st.sampled_from(["", *MARKERS, *SCORING_OUTPUT, "AGE", "age", "Y", "sex"])
EXTRA_NAME = st.one_of(BENIGN_NAME, st.text(NAME_ALPHABET, min_size=1, max_size=6), DELTA_REFUSED_NAME, REFUSED_NAME)


def _flag(percent: int) -> st.SearchStrategy[bool]:
    """True about ``percent`` % of the time; shrinks to False."""
    return st.integers(0, 99).map(lambda x: x >= 100 - percent)


@st.composite
def headers(draw: st.DrawFn, schema: StructType, *, invalid_names: bool = True) -> list[str]:
    """The schema's columns in random order and case, now and then one missing, plus extra columns."""
    names = schema.fieldNames()
    missing = draw(st.sets(st.sampled_from(names), min_size=1, max_size=2)) if draw(_flag(10)) else set()
    present = [draw(st.sampled_from([n, n.lower(), n.title()])) for n in names if n not in missing]
    extra = (
        EXTRA_NAME
        if invalid_names
        else EXTRA_NAME.map(lambda n: "".join("_" if c in DELTA_INVALID else c for c in n) or "_")
    )
    extras = draw(st.lists(extra, max_size=3))
    return draw(st.permutations(present + extras))


def _role(header: list[str], schema: StructType) -> list[str | None]:
    """The schema column each header position feeds (matched case-insensitively), or None (extra)."""
    by_lower = {n.lower(): n for n in schema.fieldNames()}
    lowered = [h.lower() for h in header]
    return [by_lower.get(h) if lowered.count(h) == 1 else None for h in lowered]


def _verdict(header: list[str], schema: StructType, *, scoring_input: bool, types: list[str] | None = None) -> str:
    """What the header alone decides: ``error`` (every job must refuse it with a SchemaError: a
    schema column missing, a name empty, repeated, reserved or, for scoring, one the output adds),
    ``refused`` (Delta refuses a name when writing), ``unknown`` (a typed ``_corrupt_record``
    text column, which validation reads as the CSV reader's malformed-line marker) or ``clean``."""
    lowered = [h.lower() for h in header]
    reserved = {n.lower() for n in (schemas.REASON, schemas.RECORD, *(SCORING_OUTPUT if scoring_input else ()))}
    corrupt = [t for h, t in zip(header, types or ["string"] * len(header)) if h.lower() == schemas.CORRUPT_RECORD]
    if (
        len(set(lowered)) < len(lowered)
        or not all(n.lower() in lowered for n in schema.fieldNames())
        or not all(header)
        or set(lowered) & reserved
        or (corrupt and (types is None or corrupt != ["string"]))
    ):
        return "error"
    if corrupt:
        return "unknown"
    return "refused" if any(set(h) & DELTA_INVALID for h in header) else "clean"


@dataclass(frozen=True)
class CsvCase:
    """A generated CSV file: its header, its rows of cells and how the text is laid out."""

    header: list[str]
    rows: list[list[Cell]]
    quote_all: bool
    newline: str
    final_newline: bool
    bom: bool

    def text(self) -> str:
        lines = [_csv_line(self.header, self.quote_all)] + [
            _csv_line([c.value for c in r], self.quote_all) for r in self.rows
        ]
        return ("\ufeff" if self.bom else "") + self.newline.join(lines) + (self.newline if self.final_newline else "")


def _csv_line(fields: list[str], quote_all: bool) -> str:
    """One RFC 4180 record; an empty lone field is quoted, or the line would be a blank line."""

    def one(f: str) -> str:
        if quote_all or set(f) & set(',"\n\r') or (len(fields) == 1 and not f):
            return '"' + f.replace('"', '""') + '"'
        return f

    return ",".join(one(f) for f in fields)


@st.composite
def csv_cases(draw: st.DrawFn, schema: StructType) -> CsvCase:
    """A CSV file for ``schema``: mostly well-formed rows, now and then one with a wrong field count."""
    header = draw(headers(schema))
    roles = _role(header, schema)

    def cell(role: str | None) -> st.SearchStrategy[Cell]:
        if role is None or role == "SEX":
            return (SEX_TEXT if role else TEXT).map(lambda t: Cell(t, "text"))
        return TEXT_CELL

    def row() -> st.SearchStrategy[list[Cell]]:
        good = st.tuples(*[cell(r) for r in roles]).map(list)
        width = len(header)
        bad_width = st.integers(1, width + 3).filter(lambda n: n != width)
        bad = bad_width.flatmap(lambda n: st.lists(TEXT_CELL, min_size=n, max_size=n))
        return st.one_of(good, bad) if draw(_flag(15)) else good

    rows = [] if draw(_flag(5)) else draw(st.lists(row(), min_size=1, max_size=6))
    return CsvCase(
        header=header,
        rows=rows,
        quote_all=draw(_flag(20)),
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        final_newline=not draw(_flag(20)),
        bom=draw(_flag(10)),
    )


# Column types of generated tables: each gives (value strategy, kind of a non-null value).
_TYPED: dict[str, tuple[st.SearchStrategy[Any], str]] = {
    "int": (st.integers(-(2**31), 2**31 - 1), "number"),
    "bigint": (st.integers(-(2**63), 2**63 - 1), "number"),
    "double": (st.floats(), "float"),
    "float": (st.floats(width=32), "float"),
    "decimal(38,10)": (st.decimals(-(10**27), 10**27, places=10, allow_nan=False, allow_infinity=False), "number"),
    "boolean": (st.booleans(), "bad"),
    "date": (st.dates(date(1900, 1, 1), date(2100, 1, 1)), "bad"),
    "timestamp": (st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1)), "bad"),
    "binary": (st.binary(max_size=4).map(bytearray), "bad"),
    "array<double>": (st.lists(st.floats(allow_nan=False), max_size=2), "bad"),
}
TYPES = ["string", *_TYPED]
#: Types a measurement may come as; any other type in a numeric column rejects every non-null value.
NUMERIC_TYPES = ["double", "string", "int", "bigint", "float", "decimal(38,10)"]


def _typed(value: Any, kind: str) -> Cell:
    if kind == "float":
        return Cell(value, "number" if math.isfinite(value) else "nonfinite")
    return Cell(value, kind)


def typed_cell(type_name: str) -> st.SearchStrategy[Cell]:
    """A value of a column of ``type_name``, or null."""
    if type_name == "string":
        values = TEXT_CELL
    else:
        strategy, kind = _TYPED[type_name]
        values = strategy.map(lambda v: _typed(v, kind))
    return st.one_of(values, values, values, st.just(Cell(None, "empty")))


@dataclass(frozen=True)
class TableCase:
    """A generated table: column names, Spark types and rows of cells, stored as Delta or Parquet."""

    header: list[str]
    types: list[str]
    rows: list[list[Cell]]
    parquet: bool


@st.composite
def table_cases(draw: st.DrawFn, schema: StructType) -> TableCase:
    """A typed table for ``schema``; Parquet written by pyarrow may hold any names, duplicates too."""
    parquet = draw(st.booleans())
    header = draw(headers(schema, invalid_names=parquet))
    if not parquet:  # Spark refuses to write duplicated names: keep the first of each
        lowered = [h.lower() for h in header]
        header = [h for i, h in enumerate(header) if lowered.index(h.lower()) == i]
    types = [draw(st.sampled_from(NUMERIC_TYPES if role else TYPES)) for role in _role(header, schema)]
    if header and draw(_flag(25)):  # now and then a column of any type, schema columns included
        types[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(TYPES))
    row = st.tuples(*[typed_cell(t) for t in types]).map(list)
    rows = [] if draw(_flag(5)) else draw(st.lists(row, min_size=1, max_size=6))
    return TableCase(header=header, types=types, rows=rows, parquet=parquet)


_ARROW = {
    "string": pa.string(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "float": pa.float32(),
    "decimal(38,10)": pa.decimal128(38, 10),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "binary": pa.binary(),
    "array<double>": pa.list_(pa.float64()),
}


def _write_table(spark, case: TableCase, where: Path) -> str:
    """Store ``case`` as a Parquet file (pyarrow) or a Delta table (Spark); returns its reference."""
    columns = list(zip(*[[c.value for c in r] for r in case.rows])) or [[] for _ in case.header]
    if case.parquet:
        path = where / "input.parquet"
        arrays = [
            pa.array([bytes(v) if isinstance(v, bytearray) else v for v in col], type=_ARROW[t])
            for col, t in zip(columns, case.types)
        ]
        pq.write_table(pa.Table.from_arrays(arrays, names=case.header), path)
        return str(path)
    schema = StructType.fromDDL(", ".join(f"`{n.replace('`', '``')}` {t}" for n, t in zip(case.header, case.types)))
    frame = spark.createDataFrame([[c.value for c in r] for r in case.rows], schema)
    path = str(where / "input")
    frame.write.format("delta").save(path)
    return path


# ---------------------------------------------------------------- what a run must have done


def _records(text: str) -> list[list[str]]:
    """The data records of a CSV text as Python's ``csv`` module reads it (blank lines are no records)."""
    rows = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")) if r]
    return rows[1:]


def _prediction(spec: dict[str, Any], by_role: dict[str, Cell]) -> float:
    """The model's prediction for a valid row, in the order of operations of ``scoring.spec_column``."""
    result = spec["intercept"]
    for name, weight in spec["weights"].items():
        if weight != 0.0:
            value = by_role[name].number()
            result = result + weight * (spec["surrogates"][name] if value is None else value)
    return result + spec["sex_weights"].get(by_role["SEX"].text(), spec["unknown_sex_weight"])


def _row_rejected(
    roles: list[str | None], row: list[Cell], width: int, required: tuple[str, ...], spec: dict | None
) -> bool:
    """Whether validation must reject ``row``: a wrong field count, a non-finite or unparseable value
    in a numeric column, a missing required value; when scoring with ``spec``, a prediction that is
    not a finite number (values so large that the model's arithmetic overflows)."""
    if len(row) != width:
        return True
    by_role = {role: c for role, c in zip(roles, row) if role is not None}
    for role, c in by_role.items():
        if (role != "SEX" and c.kind in ("nonfinite", "bad")) or (role in required and c.kind == "empty"):
            return True
    return spec is not None and not math.isfinite(_prediction(spec, by_role))


def _rejected(
    roles: list[str | None], rows: list[list[Cell]], width: int, required: tuple[str, ...], spec: dict | None
) -> int:
    return sum(_row_rejected(roles, r, width, required, spec) for r in rows)


def _batches(spark, path: Path) -> dict[str, int]:
    """Rows per ``batch_id`` of a Delta table, in one pass."""
    table = storage.read_table(spark, storage.resolve(str(path)))
    return {r[0]: r[1] for r in table.groupBy("batch_id").count().collect()}


def _only_batch(batch: str, rows: int) -> dict[str, int]:
    return {batch: rows} if rows else {}


@dataclass(frozen=True)
class Expected:
    """What a run over a generated input must do, from the header's verdict (see :func:`_verdict`),
    the records, the rows validation must reject and the reject threshold."""

    rows_in: int
    verdict: str
    rejected: int | None
    limit: float
    unreadable: bool = False  # a Parquet file with repeated names Spark may not read at all


def _check_failure(error: DiabetesSparkError, expected: Expected, *paths: Path) -> None:
    """Nothing written, and the error the input calls for: a refused header, no rows, too many
    rejects (with the counts), a name Delta refuses; a clean input does not fail."""
    event(f"failed: {type(error).__name__}")
    for p in paths:
        assert not p.exists(), f"{p} was written by a failed run"
    if expected.verdict == "unknown":
        return
    if expected.verdict == "error":
        assert isinstance(error, (SchemaError, InputError) if expected.unreadable else SchemaError), repr(error)
        return
    assert expected.rejected is not None
    if expected.rows_in == 0:
        assert isinstance(error, InputError) and "no data rows" in str(error), repr(error)
    elif expected.rejected / expected.rows_in > expected.limit:
        assert isinstance(error, RejectThresholdError), repr(error)
        assert f"{expected.rejected} of {expected.rows_in} rows" in str(error)
    else:
        assert expected.verdict == "refused", f"a valid input failed: {error!r}"
        assert isinstance(error, SchemaError) and "refused the columns" in str(error), repr(error)


def _check_counts(summary: dict[str, Any], expected: Expected, written_key: str) -> None:
    event("succeeded" + (", with rejects" if summary["rows_rejected"] else ""))
    assert expected.verdict in ("clean", "unknown"), f"expected a failure ({expected.verdict}), got {summary}"
    assert summary["rows_in"] == expected.rows_in == summary[written_key] + summary["rows_rejected"]
    if expected.verdict == "clean":
        assert summary["rows_rejected"] == expected.rejected


def _ingest_and_check(spark, folder: Path, source: str, expected: Expected) -> bool:
    """Ingest ``source``; True when it succeeded (and reconciled), False when it failed cleanly."""
    table, rejects = folder / "t", folder / "t_rejects"
    params = IngestParams(source=source, table=str(table), max_reject_fraction=expected.limit)
    try:
        summary = jobs.run_ingest(spark, params)
    except DiabetesSparkError as error:
        _check_failure(error, expected, table, rejects)
        return False
    _check_counts(summary, expected, "rows_written")
    assert storage.read_table(spark, storage.resolve(str(table))).count() == summary["rows_written"]
    assert _batches(spark, rejects) == _only_batch(summary["ingest_id"], summary["rows_rejected"])
    return True


def _score_and_check(spark, mlflow_home: Path, folder: Path, source: str, expected: Expected) -> None:
    """Score ``source``: it succeeds and reconciles, with finite predictions, or fails cleanly."""
    output, rejects = folder / "preds", folder / "preds_rejects"
    params = ScoreParams(
        input=source, output=str(output), model_name=MODEL, experiment=EXPERIMENT, max_reject_fraction=expected.limit
    )
    try:
        summary = jobs.run_batch_scoring(spark, params, home=mlflow_home)
    except DiabetesSparkError as error:
        _check_failure(error, expected, output, rejects)
        return
    _check_counts(summary, expected, "rows_scored")
    written = storage.read_table(spark, storage.resolve(str(output))).select("batch_id", schemas.PREDICTION).collect()
    assert [r[0] for r in written] == [summary["batch_id"]] * summary["rows_scored"]
    assert all(math.isfinite(r[1]) for r in written), f"non-finite predictions written: {[r[1] for r in written]}"
    assert _batches(spark, rejects) == _only_batch(summary["batch_id"], summary["rows_rejected"])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spec(trained) -> dict[str, Any]:
    """The champion's folded linear model, to tell which valid rows overflow its arithmetic."""
    resolved = registry.resolve_version(MODEL, version=trained["model_version"])
    return registry.model_metadata(resolved)[scoring.LINEAR_SPEC]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def _fresh(workdir: Path) -> Path:
    folder = workdir / uuid.uuid4().hex
    folder.mkdir()
    return folder


LIMITS = st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.0])


# ---------------------------------------------------------------- the properties


def _expected_ingested(spark, case: CsvCase, roles: list[str | None]):
    """The valid rows as the target table must hold them: schema columns parsed, extras as text."""
    extras = [h for h, r in zip(case.header, roles) if r is None]
    width = len(case.header)
    rows = []
    for row in case.rows:
        if _row_rejected(roles, row, width, (schemas.LABEL,), None):
            continue
        by_role = {r: c.value for r, c in zip(roles, row) if r is not None}
        values = []
        for field in RAW.fields:
            text = by_role[field.name].strip(" ")
            values.append(None if not text else text if field.name == "SEX" else float(text))
        values += [c.value or None for r, c in zip(roles, row) if r is None]
        rows.append(values)
    schema = StructType([*RAW.fields, *[StructField(e, StringType()) for e in extras]])
    return spark.createDataFrame(rows, schema).withColumn("SEX", F.upper("SEX"))


def _expected(case: CsvCase | TableCase, rows_in: int, schema: StructType, limit: float, spec: dict | None) -> Expected:
    """The outcome a case calls for; ``spec`` (the model) for scoring, None for ingest."""
    types = case.types if isinstance(case, TableCase) else None
    verdict = _verdict(case.header, schema, scoring_input=spec is not None, types=types)
    required = () if spec else (schemas.LABEL,)
    roles = _role(case.header, schema)
    rejected = (
        _rejected(roles, case.rows, len(case.header), required, spec) if verdict in ("clean", "refused") else None
    )
    unreadable = isinstance(case, TableCase) and len({h.lower() for h in case.header}) < len(case.header)
    return Expected(rows_in=rows_in, verdict=verdict, rejected=rejected, limit=limit, unreadable=unreadable)


def _csv_expected(case: CsvCase, text: str, schema: StructType, limit: float, spec: dict | None = None) -> Expected:
    records = _records(text)
    assert len(records) == len(case.rows)  # the generator wrote what it meant to
    return _expected(case, len(records), schema, limit, spec)


def _table_expected(case: TableCase, schema: StructType, limit: float, spec: dict | None = None) -> Expected:
    return _expected(case, len(case.rows), schema, limit, spec)


def _csv_example(schema: StructType, header: list[str], *rows: list[str]) -> CsvCase:
    """A hand-written case: numbers in the schema's numeric columns, text elsewhere."""
    roles = _role(header, schema)

    def cell(role: str | None, value: str) -> Cell:
        numeric = role is not None and role != "SEX"
        return Cell(value, ("number" if value.strip(" ") else "empty") if numeric else "text")

    cases = [[cell(role, v) for role, v in zip(roles, r)] for r in rows]
    return CsvCase(header, cases, quote_all=False, newline="\n", final_newline=True, bom=False)


def _table_example(parquet: bool, columns: list[tuple[str, str]], *rows: list[Any]) -> TableCase:
    """A hand-written typed case; the kind of each value follows from its column's type."""
    header = [n for n, _ in columns]
    types = [t for _, t in columns]

    def cell(type_name: str, value: Any) -> Cell:
        if value is None:
            return Cell(None, "empty")
        if type_name == "string":
            return Cell(value, "number" if value.strip(" ") else "empty")
        return _typed(value, _TYPED[type_name][1])

    cases = [[cell(t, v) for t, v in zip(types, r)] for r in rows]
    return TableCase(header=header, types=types, rows=cases, parquet=parquet)


#: Cases run first every time, so each kind of hostile input found so far is tested whatever the
#: random examples turn out to be: quotes and a line break inside quoted fields; names that need
#: quoting; a name Delta refuses; a repeated, an empty and a reserved name; values so large that a
#: prediction overflows; a name the scoring output adds; values of types that are no measurement;
#: Parquet columns of the same name and different types.
GOOD_ROW = ["59", "F", "32.1", "101", "157", "93.2", "38", "4", "4.8598", "87", "151"]
QUOTED = _csv_example(
    RAW,
    [*RAW.fieldNames(), "note"],
    [*GOOD_ROW[:1], 'F "a"', *GOOD_ROW[2:], 'line 1\nline 2, "quoted"'],
    ["48", "M", "21.6", "87", "183", "103.2", "70", "3", "3.8918", "69", "75", ""],
)
CSV_INGEST_EXAMPLES = [
    QUOTED,
    _csv_example(RAW, [*RAW.fieldNames(), "a.b", "`q`", "Ünïcødé_名前"], [*GOOD_ROW, "1", "2", "3"]),
    *[_csv_example(RAW, [*RAW.fieldNames(), name], [*GOOD_ROW, "1"]) for name in ("a b", "age", "", "_corrupt_record")],
]
CSV_SCORING_EXAMPLES = [
    _csv_example(INPUT, INPUT.fieldNames(), ["1e308", "F", *["1e308"] * 8], ["4", "M", *["4"] * 8]),
    _csv_example(INPUT, [*INPUT.fieldNames(), "prediction"], [*GOOD_ROW[:10], "1"]),
]
_ODD = [
    ("AGE", "date"),
    ("SEX", "string"),
    ("BMI", "boolean"),
    ("BP", "timestamp"),
    ("S1", "array<double>"),
    ("S2", "binary"),
]
_ODD_ROWS = (
    [date(2020, 1, 1), "F", True, datetime(2020, 1, 1), [1.0], bytearray(b"7")],
    [None, "M", None, None, None, None],
)
_DOUBLES = [(c, "double") for c in ("S3", "S4", "S5", "S6")]
TABLE_INGEST_EXAMPLES = [
    _table_example(False, [*_ODD, *_DOUBLES, ("Y", "double")], *[[*r, 1.0, 2.0, 3.0, 4.0, 5.0] for r in _ODD_ROWS]),
    _table_example(
        True, [*[(c, "double") for c in RAW.fieldNames() if c != "SEX"], ("SEX", "string"), ("Y", "boolean")]
    ),
]
TABLE_SCORING_EXAMPLES = [
    _table_example(True, [*_ODD, *_DOUBLES], *[[*r, 1.0, 2.0, 3.0, 4.0] for r in _ODD_ROWS]),
    _table_example(
        False, [*[(c, "double") for c in INPUT.fieldNames() if c != "SEX"], ("SEX", "string"), ("batch_id", "string")]
    ),
]


def _examples(cases: list[CsvCase] | list[TableCase]):
    """Run each of ``cases`` (with no reject threshold) before the generated examples."""

    def decorate(test):
        for case in reversed(cases):
            test = example(case=case, limit=1.0)(test)
        return test

    return decorate


@settings(HOSTILE, max_examples=20)
@_examples(CSV_INGEST_EXAMPLES)
@given(case=csv_cases(RAW), limit=LIMITS)
def test_ingest_of_generated_csv_reconciles_or_fails_cleanly(spark, workdir: Path, case: CsvCase, limit: float) -> None:
    folder = _fresh(workdir)
    text = case.text()
    (folder / "in.csv").write_text(text, encoding="utf-8", newline="")
    expected = _csv_expected(case, text, RAW, limit)
    if _ingest_and_check(spark, folder, str(folder / "in.csv"), expected) and expected.verdict == "clean":
        written = storage.read_table(spark, storage.resolve(str(folder / "t")))
        wanted = _expected_ingested(spark, case, _role(case.header, RAW))
        assert written.columns == wanted.columns
        # chispa sorts by column name, which Spark parses (a.b): compare by position instead.
        positional = [f"c{i}" for i in range(len(wanted.columns))]
        assert_df_equality(
            written.toDF(*positional),
            wanted.toDF(*positional),
            ignore_row_order=True,
            ignore_nullable=True,
            ignore_metadata=True,
        )


@settings(HOSTILE, max_examples=15)
@_examples(CSV_SCORING_EXAMPLES)
@given(case=csv_cases(INPUT), limit=LIMITS)
def test_scoring_of_generated_csv_reconciles_or_fails_cleanly(
    spark, mlflow_home: Path, spec: dict, workdir: Path, case: CsvCase, limit: float
) -> None:
    folder = _fresh(workdir)
    text = case.text()
    (folder / "batch.csv").write_text(text, encoding="utf-8", newline="")
    _score_and_check(
        spark, mlflow_home, folder, str(folder / "batch.csv"), _csv_expected(case, text, INPUT, limit, spec)
    )


@settings(HOSTILE, max_examples=15)
@_examples(TABLE_INGEST_EXAMPLES)
@given(case=table_cases(RAW), limit=LIMITS)
def test_ingest_of_generated_tables_reconciles_or_fails_cleanly(
    spark, workdir: Path, case: TableCase, limit: float
) -> None:
    folder = _fresh(workdir)
    source = _write_table(spark, case, folder)
    _ingest_and_check(spark, folder, source, _table_expected(case, RAW, limit))


@settings(HOSTILE, max_examples=12)
@_examples(TABLE_SCORING_EXAMPLES)
@given(case=table_cases(INPUT), limit=LIMITS)
def test_scoring_of_generated_tables_reconciles_or_fails_cleanly(
    spark, mlflow_home: Path, spec: dict, workdir: Path, case: TableCase, limit: float
) -> None:
    folder = _fresh(workdir)
    source = _write_table(spark, case, folder)
    _score_and_check(spark, mlflow_home, folder, source, _table_expected(case, INPUT, limit, spec))


# ---------------------------------------------------------------- the reject threshold: nothing written


def _threshold_csv(path: Path, schema: StructType, good: int, bad: int) -> str:
    """``good`` valid rows and ``bad`` rows whose BMI is ``x``."""
    values = dict(zip(RAW.fieldNames(), GOOD_ROW))
    row = [values[c] for c in schema.fieldNames()]
    broken = [("x" if c == "BMI" else v) for c, v in zip(schema.fieldNames(), row)]
    lines = [",".join(schema.fieldNames())] + [",".join(row)] * good + [",".join(broken)] * bad
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _versions(spark, *paths: Path) -> list[int | None]:
    return [storage.delta_version(spark, storage.resolve(str(p))) for p in paths]


THRESHOLD_REASON = "\"BMI: cannot parse 'x' as double\" x"


def test_ingest_over_the_reject_threshold_leaves_existing_tables_unchanged(spark, tmp_path: Path) -> None:
    table, rejects = tmp_path / "t", tmp_path / "t_rejects"
    ok = IngestParams(source=_threshold_csv(tmp_path / "ok.csv", RAW, 9, 1), table=str(table), max_reject_fraction=0.2)
    assert jobs.run_ingest(spark, ok)["rows_written"] == 9
    before = _versions(spark, table, rejects)
    bad = dataclasses.replace(ok, source=_threshold_csv(tmp_path / "bad.csv", RAW, 7, 3))
    with pytest.raises(RejectThresholdError) as info:
        jobs.run_ingest(spark, bad)
    assert "3 of 10 rows (30.0%)" in str(info.value) and THRESHOLD_REASON + "3" in str(info.value)
    assert _versions(spark, table, rejects) == before
    assert storage.read_table(spark, storage.resolve(str(table))).count() == 9


def test_scoring_over_the_reject_threshold_writes_nothing(spark, mlflow_home: Path, trained, tmp_path: Path) -> None:
    output, rejects = tmp_path / "preds", tmp_path / "preds_rejects"
    params = ScoreParams(input="sample:scoring_batch.csv", output=str(output), model_name=MODEL, experiment=EXPERIMENT)
    assert params.max_reject_fraction == 0.2  # the documented default
    assert (
        jobs.run_batch_scoring(spark, dataclasses.replace(params, batch_id="day-1"), home=mlflow_home)["rows_scored"]
        == 38
    )
    before = _versions(spark, output, rejects)
    bad = _threshold_csv(tmp_path / "bad.csv", INPUT, 7, 3)
    for out in (output, tmp_path / "fresh"):
        again = dataclasses.replace(params, input=bad, output=str(out), batch_id="day-2")
        with pytest.raises(RejectThresholdError) as info:
            jobs.run_batch_scoring(spark, again, home=mlflow_home)
        assert "3 of 10 rows (30.0%)" in str(info.value) and THRESHOLD_REASON + "3" in str(info.value)
    assert _versions(spark, output, rejects) == before
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "fresh_rejects").exists()
    assert _batches(spark, output) == {"day-1": 38}


def test_training_over_the_reject_threshold_registers_nothing(
    spark, mlflow_home: Path, trained, tmp_path: Path
) -> None:
    client = MlflowClient()
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'"))
    aliases = {a: registry.alias_version(MODEL, a) for a in (registry.CHAMPION, registry.CHALLENGER)}
    source = _threshold_csv(tmp_path / "train.csv", RAW, 30, 10)
    params = TrainParams(training_data=source, experiment=EXPERIMENT, model_name=MODEL)
    assert params.max_reject_fraction == 0.2  # the documented default
    with pytest.raises(RejectThresholdError) as info:
        jobs.run_training(spark, params, home=mlflow_home)
    assert "10 of 40 rows (25.0%)" in str(info.value) and THRESHOLD_REASON + "10" in str(info.value)
    assert sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'")) == versions
    assert {a: registry.alias_version(MODEL, a) for a in aliases} == aliases
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment], filter_string=f"tags.training_data = '{source}'")
    assert run.info.status == "FAILED" and client.list_artifacts(run.info.run_id) == []
