"""Batch scoring in the JVM: the fitted pipeline, or the same linear model as one Column expression.

``compile_linear`` turns a fitted linear pipeline (imputer, SEX one-hot, assembler, scaler,
linear regression) into a single Spark Column expression with the same predictions: no vectors,
no UDFs, so scoring costs little beyond reading and writing. Any other pipeline is scored with its
own ``transform``. Either way every input column is kept and lineage columns are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pyspark.sql import Column
from pyspark.sql import functions as F

from diabetes_spark.errors import SchemaError
from diabetes_spark.schemas import (
    CATEGORICAL,
    PREDICTION,
    REASON,
    RECORD,
    column,
    finite,
    load_schema,
    numeric_feature_names,
)

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, Row


#: Key of the folded linear model (:func:`linear_spec`) in the logged model's ``MLmodel`` metadata:
#: scoring a linear model then needs no ``PipelineModel`` load.
LINEAR_SPEC = "diabetes_spark_linear_spec"
LINEAGE_COLUMNS = ("model_name", "model_version", "batch_id", "scored_at", "mlflow_run_id")
#: Partition columns of a predictions (and its rejects) table this job creates. Each run writes and
#: replaces one batch, so a batch's rows never share a file with another's anyway; partitioned, the
#: replace of a rerun is a metadata change instead of a scan and rewrite of the batch's old files,
#: two batches written at once do not conflict, and ``batch_id`` is kept in the Delta log, not in
#: every row of the Parquet files.
BATCH_PARTITIONING = ("batch_id",)
#: Properties of a predictions table this job creates. Delta keeps min/max statistics per file for
#: the columns readers filter on (model, time, prediction; the batch is the partition) instead of the
#: first 32: statistics of the input features skip no file in practice and cost about a sixth of the write.
PREDICTIONS_TABLE_PROPERTIES = {
    "delta.dataSkippingStatsColumns": ",".join(("model_name", "model_version", "scored_at", PREDICTION)),
}


@dataclass(frozen=True)
class Lineage:
    """Where a batch of predictions came from."""

    model_name: str
    model_version: str
    batch_id: str
    scored_at: datetime
    mlflow_run_id: str


def linear_spec(model: PipelineModel) -> dict[str, Any] | None:
    """The fitted linear pipeline folded into plain numbers, or ``None`` if the pipeline is not the
    linear shape built by :mod:`diabetes_spark.features`.

    Folding imputation, one-hot encoding and standardisation into the coefficients gives
    ``intercept + sum(weights[c] * coalesce(x_c, surrogates[c])) + sex_weights[SEX]``, exactly the
    model's own arithmetic (unseen or empty SEX takes ``unknown_sex_weight``, as
    ``handleInvalid="keep"`` does). The spec is small JSON: it travels in the logged model's
    metadata so scoring needs no ``PipelineModel`` load.
    """
    from pyspark.ml.feature import (
        ImputerModel,
        OneHotEncoderModel,
        StandardScalerModel,
        StringIndexerModel,
        VectorAssembler,
    )
    from pyspark.ml.regression import LinearRegressionModel

    kinds = (
        ImputerModel,
        StringIndexerModel,
        OneHotEncoderModel,
        VectorAssembler,
        StandardScalerModel,
        LinearRegressionModel,
    )
    stages = model.stages
    if len(stages) != len(kinds) or not all(isinstance(s, k) for s, k in zip(stages, kinds)):
        return None
    # Checked just above: each stage is an instance of its kind (pyspark types stages as Transformer).
    imputer = cast(ImputerModel, stages[0])
    indexer = cast(StringIndexerModel, stages[1])
    encoder = cast(OneHotEncoderModel, stages[2])
    scaler = cast(StandardScalerModel, stages[4])
    regression = cast(LinearRegressionModel, stages[5])
    if encoder.getDropLast() is not True or indexer.getHandleInvalid() != "keep":
        return None

    numeric = numeric_feature_names()
    surrogates = cast("Row", imputer.surrogateDF.first()).asDict()  # one row: a surrogate per column
    weights = regression.coefficients.toArray()
    means = scaler.mean.toArray() if scaler.getWithMean() else [0.0] * len(weights)
    stds = scaler.std.toArray()
    labels = list(indexer.labels)
    if len(weights) != len(numeric) + len(labels) + 1:
        return None

    def factor(i: int) -> float:
        if not scaler.getWithStd():
            return float(weights[i])
        return float(weights[i]) / float(stds[i]) if stds[i] != 0.0 else 0.0  # Spark scales a constant to 0

    factors = [factor(i) for i in range(len(weights))]
    offset = len(numeric)
    return {
        "intercept": float(regression.intercept) - sum(f * float(m) for f, m in zip(factors, means)),
        "weights": {c: factors[i] for i, c in enumerate(numeric)},
        "surrogates": {c: float(surrogates[c]) for c in numeric},
        "sex_weights": {label: factors[offset + j] for j, label in enumerate(labels)},
        "unknown_sex_weight": factors[offset + len(labels)],
    }


def spec_column(spec: dict[str, Any]) -> Column:
    """The prediction Column of a :func:`linear_spec`."""
    expression: Column = F.lit(spec["intercept"])
    for name, weight in spec["weights"].items():
        if weight != 0.0:
            value = F.coalesce(F.col(name).cast("double"), F.lit(spec["surrogates"][name]))
            expression = expression + F.lit(weight) * value
    (sex,) = CATEGORICAL
    category: Column = F.lit(spec["unknown_sex_weight"])
    for label, weight in reversed(list(spec["sex_weights"].items())):
        category = F.when(F.col(sex) == label, F.lit(weight)).otherwise(category)
    return expression + category


def compile_linear(model: PipelineModel) -> Column | None:
    """The prediction of a fitted linear pipeline as one Column expression (see :func:`linear_spec`),
    or ``None`` for any other pipeline."""
    spec = linear_spec(model)
    return None if spec is None else spec_column(spec)


def predict(df: DataFrame, model: PipelineModel | None, *, compiled: Column | None = None) -> DataFrame:
    """``df`` with a ``prediction`` column added and nothing else changed.

    Uses ``compiled`` (from :func:`compile_linear` or :func:`spec_column`) when given, else the
    pipeline's ``transform``.
    """
    if compiled is not None:
        return df.withColumn(PREDICTION, compiled)
    if model is None:
        raise ValueError("predict needs a model or a compiled expression")
    return model.transform(df).select(*[column(c) for c in df.columns], F.col(PREDICTION))


def reject_non_finite(scored: DataFrame, *, added: Sequence[str] = ()) -> DataFrame:
    """Reject the rows of a scored :func:`~diabetes_spark.schemas.annotate` result whose prediction
    is not a finite number, so no Infinity or NaN is ever written as a prediction.

    Every input value may be finite and still overflow the model's arithmetic (``BMI`` 1e308 times
    its weight is Infinity; Infinity minus Infinity is NaN). Such a row gets the reason
    ``prediction: not a finite number`` and its parsed values as its record, like any other reject.
    ``added`` names other columns scoring added (a shadow prediction): they are not in the record.
    """
    prediction = F.col(PREDICTION)
    overflow = ~F.coalesce(finite(prediction), F.lit(False))
    inputs = [column(c) for c in scored.columns if c not in (PREDICTION, REASON, RECORD, *added)]
    record = F.to_json(F.struct(*inputs), {"ignoreNullFields": "false"})
    reason = F.when(
        overflow, F.concat_ws("; ", F.col(REASON), F.lit("prediction: not a finite number (input values too large)"))
    )
    return scored.withColumns(
        {
            REASON: F.coalesce(reason, F.col(REASON)),
            RECORD: F.when(overflow & F.col(RECORD).isNull(), record).otherwise(F.col(RECORD)),
        }
    )


def with_lineage(scored: DataFrame, lineage: Lineage) -> DataFrame:
    """Order columns as the ``predictions`` schema (extra input columns last) and add lineage."""
    schema = load_schema("predictions")
    literals = {
        "model_name": F.lit(lineage.model_name),
        "model_version": F.lit(lineage.model_version),
        "batch_id": F.lit(lineage.batch_id),
        "scored_at": F.lit(lineage.scored_at).cast("timestamp"),
        "mlflow_run_id": F.lit(lineage.mlflow_run_id),
    }
    columns = [literals[f.name].alias(f.name) if f.name in literals else F.col(f.name) for f in schema.fields]
    extras = [column(c) for c in scored.columns if c not in schema.fieldNames()]
    return scored.select(*columns, *extras)


def category_labels(model: PipelineModel) -> list[str]:
    """The SEX categories a fitted pipeline saw in training."""
    from pyspark.ml.feature import StringIndexerModel

    for stage in model.stages:
        if isinstance(stage, StringIndexerModel):
            return list(stage.labels)
    return []


def unseen_category(labels: list[str]) -> Column:
    """True where ``SEX`` is not one of ``labels`` (null counts as unseen)."""
    (sex,) = CATEGORICAL
    return F.col(sex).isNull() | ~F.col(sex).isin(*labels)


def check_input_columns(columns: Sequence[str]) -> None:
    """Fail when an input column has the name of a column scoring adds (``prediction``, lineage):
    the output would silently replace its values.

    Raises:
        SchemaError: Naming the clashing columns.
    """
    added = (PREDICTION, *LINEAGE_COLUMNS)
    clashing = [c for c in columns if c.lower() in {a.lower() for a in added}]
    if clashing:
        raise SchemaError(
            f"input column(s) {clashing} have the name of a column scoring adds ({', '.join(added)}): "
            "their values would be replaced. Rename or drop them."
        )
