"""Batch scoring in the JVM: the fitted pipeline, or the same linear model as one Column expression.

``compile_linear`` turns a fitted linear pipeline (imputer, SEX one-hot, assembler, scaler,
linear regression) into a single Spark Column expression with the same predictions: no vectors,
no UDFs, so scoring costs little beyond reading and writing. Any other pipeline is scored with its
own ``transform``. Either way every input column is kept and lineage columns are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F

from diabetes_spark.schemas import CATEGORICAL, load_schema, numeric_feature_names

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

__all__ = ["Lineage", "LINEAGE_COLUMNS", "PREDICTION", "compile_linear", "predict", "with_lineage", "unseen_category"]

PREDICTION = "prediction"
LINEAGE_COLUMNS = ("model_name", "model_version", "batch_id", "scored_at", "mlflow_run_id")


@dataclass(frozen=True)
class Lineage:
    """Where a batch of predictions came from."""

    model_name: str
    model_version: str
    batch_id: str
    scored_at: datetime
    mlflow_run_id: str


def compile_linear(model: PipelineModel) -> Column | None:
    """The prediction of a fitted linear pipeline as one Column expression, or ``None`` if the
    pipeline is not the linear shape built by :mod:`diabetes_spark.features`.

    Folding imputation, one-hot encoding and standardisation into the coefficients gives
    ``intercept' + sum(c_i * coalesce(x_i, surrogate_i)) + c_SEX[SEX]``, exactly the model's own
    arithmetic (unseen or empty SEX takes the "unknown" slot, as ``handleInvalid="keep"`` does).
    """
    from pyspark.ml.feature import (
        ImputerModel,
        OneHotEncoderModel,
        StandardScalerModel,
        StringIndexerModel,
        VectorAssembler,
    )
    from pyspark.ml.regression import LinearRegressionModel

    kinds = (ImputerModel, StringIndexerModel, OneHotEncoderModel, VectorAssembler, StandardScalerModel, LinearRegressionModel)
    stages = model.stages
    if len(stages) != len(kinds) or not all(isinstance(s, k) for s, k in zip(stages, kinds)):
        return None
    imputer, indexer, encoder, _, scaler, regression = stages
    if encoder.getDropLast() is not True or indexer.getHandleInvalid() != "keep":
        return None

    numeric = numeric_feature_names()
    surrogates = imputer.surrogateDF.first().asDict()
    weights = regression.coefficients.toArray()
    means = scaler.mean.toArray() if scaler.getWithMean() else [0.0] * len(weights)
    stds = scaler.std.toArray()
    labels = list(indexer.labels)
    if len(weights) != len(numeric) + len(labels) + 1:
        return None

    def factor(i: int) -> float:
        scale = 1.0 / stds[i] if scaler.getWithStd() and stds[i] != 0.0 else (1.0 if not scaler.getWithStd() else 0.0)
        return float(weights[i]) * scale

    factors = [factor(i) for i in range(len(weights))]
    intercept = float(regression.intercept) - sum(f * float(m) for f, m in zip(factors, means))
    terms: list[Column] = [F.lit(intercept)]
    for i, column in enumerate(numeric):
        if factors[i] != 0.0:
            terms.append(F.lit(factors[i]) * F.coalesce(F.col(column).cast("double"), F.lit(float(surrogates[column]))))
    (sex,) = CATEGORICAL
    offset = len(numeric)
    category = F.lit(factors[offset + len(labels)])  # the "unknown" slot
    for j in reversed(range(len(labels))):
        category = F.when(F.col(sex) == labels[j], F.lit(factors[offset + j])).otherwise(category)
    terms.append(category)
    expression = terms[0]
    for term in terms[1:]:
        expression = expression + term
    return expression


def predict(df: DataFrame, model: PipelineModel, *, compiled: Column | None = None) -> DataFrame:
    """``df`` with a ``prediction`` column added and nothing else changed.

    Uses ``compiled`` (from :func:`compile_linear`) when given, else the pipeline's ``transform``.
    """
    if compiled is not None:
        return df.withColumn(PREDICTION, compiled)
    return model.transform(df).select(*[F.col(c) for c in df.columns], F.col(PREDICTION))


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
    extras = [F.col(c) for c in scored.columns if c not in schema.fieldNames()]
    return scored.select(*columns, *extras)


def unseen_category(model: PipelineModel) -> Column:
    """True where ``SEX`` is not a category the model saw in training (null counts as unseen)."""
    from pyspark.ml.feature import StringIndexerModel

    labels: list[str] = []
    for stage in model.stages:
        if isinstance(stage, StringIndexerModel):
            labels = list(stage.labels)
    (sex,) = CATEGORICAL
    return F.col(sex).isNull() | ~F.col(sex).isin(*labels)
