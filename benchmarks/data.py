"""Benchmark data: N rows resampled from the shipped sample with small noise, ~1% missing values and
an id column, written once as Delta (and Parquet for the pandas baseline) and reused between runs."""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from diabetes_spark import schemas, storage

NOISE = 0.02  # of each feature's standard deviation
MISSING = 0.01


def _base(spark: SparkSession) -> DataFrame:
    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("training_raw"), required=("Y",), source="s", batch_id="b")
    ordered = Window.orderBy(*schemas.feature_names(), "Y")
    return valid.dropna().withColumn("__k", F.row_number().over(ordered) - 1)


def generate(spark: SparkSession, n: int, folder: Path, *, seed: int = 7, parquet: bool = True) -> dict[str, str]:
    """Write (or reuse) the N-row data set; returns the Delta and Parquet locations (``parquet=False``:
    the Delta table alone, whose folder pandas reads as Parquet)."""
    target = folder / f"n={n}"
    meta = target / "meta.json"
    wanted = {"n": n, "seed": seed, "noise": NOISE, "missing": MISSING, **({} if parquet else {"parquet": False})}
    paths = {"delta": str(target / "delta"), "parquet": str(target / "parquet")}
    if meta.exists() and json.loads(meta.read_text()) == wanted:
        return paths
    base = _base(spark).cache()
    size = base.count()
    stds = base.agg(*[F.stddev(c).alias(c) for c in [*schemas.numeric_feature_names(), "Y"]]).first().asDict()
    rows = spark.range(n).select(F.col("id"), (F.abs(F.xxhash64("id", F.lit(seed))) % size).alias("__k"))
    joined = rows.join(F.broadcast(base), "__k").drop("__k")
    columns = [F.format_string("P%010d", "id").alias("patient_id")]
    for i, c in enumerate(schemas.numeric_feature_names()):
        noisy = F.col(c) + F.randn(seed + i) * F.lit(NOISE * stds[c])
        columns.append(F.when(F.rand(seed + 100 + i) < MISSING, F.lit(None)).otherwise(F.round(noisy, 4)).alias(c))
    columns.append(F.col("SEX"))
    columns.append((F.col("Y") + F.randn(seed + 50) * F.lit(NOISE * stds["Y"])).alias("Y"))
    data = joined.select(*columns).select("patient_id", *schemas.feature_names(), "Y")
    partitions = max(2, n // 1_000_000 * 2)
    data.repartition(partitions).write.format("delta").mode("overwrite").save(paths["delta"])
    if parquet:
        spark.read.format("delta").load(paths["delta"]).write.mode("overwrite").parquet(paths["parquet"])
    base.unpersist()
    meta.write_text(json.dumps(wanted))
    return paths
