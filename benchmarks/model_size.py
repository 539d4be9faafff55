"""``python -m benchmarks.model_size``: what each estimator's fitted pipeline weighs, saved as Spark
writes it (what serverless compute measures against its 100 MB limit per Spark ML model).

Fits every estimator at the default settings on the shipped sample, then the tree estimators at
larger settings, saves each pipeline to a temporary folder and prints a Markdown table of the sizes.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from diabetes_spark import schemas, spark_models, storage, training
from diabetes_spark.params import ESTIMATORS, TrainParams
from diabetes_spark.session import get_spark

#: Settings beyond the defaults: (estimator, overrides).
LARGER = (
    ("gbt", {"max_depth": 8}),
    ("random_forest", {"max_depth": 8}),
    ("random_forest", {"num_trees": 200, "max_depth": 10}),
)


def _settings(params: TrainParams) -> str:
    if params.estimator == "linear":
        return f"reg_param={params.reg_param}, max_iter={params.max_iter}"
    trees = f"num_trees={params.num_trees}, " if params.estimator == "random_forest" else "20 iterations (Spark's), "
    return f"{trees}max_depth={params.max_depth}"


def main() -> int:
    spark = get_spark("model-size")
    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    schema = schemas.load_schema("training_raw")
    valid, _ = schemas.split_valid(raw, schema, required=(schemas.LABEL,), source="sample", batch_id="size")
    valid = valid.select(*schema.fieldNames()).cache()
    base = TrainParams(training_data="sample:diabetes.csv")
    runs = [(dataclasses.replace(base, estimator=e), "default") for e in ESTIMATORS]
    runs += [(dataclasses.replace(base, estimator=e, **o), "larger") for e, o in LARGER]
    print(f"{valid.count()} rows; limit {spark_models.SERVERLESS_MODEL_LIMIT / 1e6:g} MB\n")
    print("| estimator | settings | saved size | share of the limit |\n|---|---|---|---|")
    for params, kind in runs:
        model = training.fit(valid, params).model
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model"
            model.write().save(str(path))
            size = spark_models.check_size(path, limit=sys.maxsize)
        share = size / spark_models.SERVERLESS_MODEL_LIMIT
        print(f"| {params.estimator} | {_settings(params)} ({kind}) | {size / 1e3:,.1f} kB | {share:.3%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
