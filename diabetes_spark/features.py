"""Spark ML feature stages: impute numeric columns, encode SEX, assemble, scale.

Pure builders: they return unfitted stages and touch no data. The fitted ``PipelineModel`` carries
every step, so scoring never re-implements feature logic.
"""

from __future__ import annotations

from pyspark.ml.base import Estimator, Transformer
from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

from diabetes_spark.schemas import CATEGORICAL, numeric_feature_names

#: Output column of the feature stages: the vector the estimator reads.
FEATURES = "features"
SEX_INDEX = "SEX_index"
SEX_VECTOR = "SEX_onehot"
_ASSEMBLED = "features_unscaled"


def imputed_name(column: str) -> str:
    """Name of the imputed copy of a numeric column."""
    return f"{column}_imputed"


def build_feature_stages(*, imputer_strategy: str = "mean", scale: bool = True) -> list[Estimator | Transformer]:
    """The feature stages, in order.

    Args:
        imputer_strategy: ``"mean"`` or ``"median"``: what an empty numeric value becomes.
        scale: Standardise the assembled vector (for linear models; trees do not need it).

    Returns:
        ``[Imputer, StringIndexer, OneHotEncoder, VectorAssembler(, StandardScaler)]`` writing
        :data:`FEATURES`. An unseen or empty ``SEX`` at scoring time does not fail: it is indexed
        as "unknown" and one-hot encoded into a slot of its own (weight 0 after training on known
        categories only).
    """
    numeric = numeric_feature_names()
    (sex,) = CATEGORICAL
    stages: list[Estimator | Transformer] = [
        Imputer(inputCols=numeric, outputCols=[imputed_name(c) for c in numeric], strategy=imputer_strategy),
        StringIndexer(inputCol=sex, outputCol=SEX_INDEX, handleInvalid="keep", stringOrderType="alphabetAsc"),
        OneHotEncoder(inputCols=[SEX_INDEX], outputCols=[SEX_VECTOR], handleInvalid="keep", dropLast=True),
        VectorAssembler(
            inputCols=[imputed_name(c) for c in numeric] + [SEX_VECTOR],
            outputCol=_ASSEMBLED if scale else FEATURES,
        ),
    ]
    if scale:
        stages.append(StandardScaler(inputCol=_ASSEMBLED, outputCol=FEATURES, withMean=True, withStd=True))
    return stages
