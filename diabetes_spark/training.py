"""Split, fit (optionally tune) and evaluate the Spark ML pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.regression import GBTRegressor, LinearRegression, RandomForestRegressor
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, ParamGridBuilder, TrainValidationSplit

from diabetes_spark.errors import TrainingError, error_condition, one_line, spark_failures
from diabetes_spark.evaluation import regression_metrics
from diabetes_spark.features import FEATURES, build_feature_stages
from diabetes_spark.params import ESTIMATORS, TrainParams
from diabetes_spark.runtime import cached
from diabetes_spark.schemas import LABEL, PREDICTION

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the fitted pipeline, its held-out metrics and the data it saw."""

    model: PipelineModel
    metrics: dict[str, float]
    train: DataFrame
    test: DataFrame
    predictions: DataFrame
    rows_train: int = 0
    rows_test: int = 0
    best_params: dict[str, Any] = field(default_factory=dict)


def split(df: DataFrame, *, train_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Seeded train/test split (the same input and seed give the same rows)."""
    train, test = df.randomSplit([train_fraction, 1.0 - train_fraction], seed=seed)
    return train, test


class _Columns(TypedDict):
    """The column arguments every estimator takes (Spark's names)."""

    featuresCol: str
    labelCol: str
    predictionCol: str


def _estimator(params: TrainParams) -> LinearRegression | GBTRegressor | RandomForestRegressor:
    common: _Columns = {"featuresCol": FEATURES, "labelCol": LABEL, "predictionCol": PREDICTION}
    if params.estimator == "linear":
        return LinearRegression(
            regParam=params.reg_param,
            elasticNetParam=params.elastic_net_param,
            maxIter=params.max_iter,
            standardization=False,  # the pipeline's StandardScaler already did it
            **common,
        )
    if params.estimator == "gbt":
        return GBTRegressor(maxDepth=params.max_depth, seed=params.seed, **common)
    if params.estimator == "random_forest":
        return RandomForestRegressor(numTrees=params.num_trees, maxDepth=params.max_depth, seed=params.seed, **common)
    raise TrainingError(f"unknown estimator {params.estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def build_pipeline(params: TrainParams) -> Pipeline:
    """Feature stages + the estimator named by ``params.estimator``.

    Raises:
        TrainingError: Unknown estimator name.
    """
    estimator = _estimator(params)
    stages = build_feature_stages(imputer_strategy=params.imputer_strategy, scale=params.estimator == "linear")
    return Pipeline(stages=[*stages, estimator])


def _grid(pipeline: Pipeline, params: TrainParams) -> list[dict]:
    """A small search grid around the estimator's main knobs."""
    estimator = pipeline.getStages()[-1]  # the one _estimator(params) made
    grid = ParamGridBuilder()
    if params.estimator == "linear":
        linear = cast(LinearRegression, estimator)
        grid = grid.addGrid(linear.regParam, [0.0, 0.01, 0.1, 1.0]).addGrid(linear.elasticNetParam, [0.0, 0.5])
    else:
        trees = cast("GBTRegressor | RandomForestRegressor", estimator)
        grid = grid.addGrid(trees.maxDepth, [2, 4, 6])
    return grid.build()


def _fit(pipeline: Pipeline, train: DataFrame, params: TrainParams) -> tuple[PipelineModel, dict[str, Any]]:
    """The fitted pipeline, tuned over :func:`_grid` if asked, and the best grid point's values."""
    if params.tuning == "none":
        return pipeline.fit(train), {}
    evaluator = RegressionEvaluator(labelCol=LABEL, predictionCol=PREDICTION, metricName=params.primary_metric)
    grid = _grid(pipeline, params)
    tuner_cls = CrossValidator if params.tuning == "cross_validation" else TrainValidationSplit
    extra = {"numFolds": params.num_folds} if params.tuning == "cross_validation" else {"trainRatio": 0.75}
    tuner = tuner_cls(estimator=pipeline, estimatorParamMaps=grid, evaluator=evaluator, seed=params.seed, **extra)
    tuned = tuner.fit(train)
    metrics = list(tuned.avgMetrics) if isinstance(tuned, CrossValidatorModel) else list(tuned.validationMetrics)
    best = metrics.index(max(metrics) if evaluator.isLargerBetter() else min(metrics))
    # The tuned estimator is the pipeline, so its best model is a fitted pipeline.
    return cast(PipelineModel, tuned.bestModel), {p.name: v for p, v in grid[best].items()}


@contextmanager
def refusals(estimator: str, source: object) -> Iterator[None]:
    """An estimator refusing the data (Spark ML's ``IllegalArgumentException``, or a value check
    raised in SQL, ``USER_RAISED_EXCEPTION``) as the :class:`TrainingError` it is: the rows were
    valid one by one, but together their values make the fit impossible."""
    try:
        yield
    except spark_failures() as e:
        condition = error_condition(e) or type(e).__name__
        if type(e).__name__ != "IllegalArgumentException" and condition != "USER_RAISED_EXCEPTION":
            raise
        raise TrainingError(
            f"the {estimator} estimator cannot fit training data {source} ({one_line(e, 300)}): look for extreme "
            f"values (near ±1e308) or constant columns, and rescale or remove them [{condition}]"
        ) from e


def fit(valid: DataFrame, params: TrainParams) -> TrainResult:
    """Split ``valid`` rows, fit the pipeline (tuned if asked) and evaluate it on the held-out split.

    Raises:
        TrainingError: Fewer valid rows than ``params.min_rows``, an empty split, or an unknown estimator.
    """
    pipeline = build_pipeline(params)
    train, test = split(valid, train_fraction=params.train_fraction, seed=params.seed)
    with cached(train):  # counted, then fitted (several passes when tuned)
        n_train, n_test = train.count(), test.count()
        if n_train + n_test < params.min_rows:
            raise TrainingError(
                f"{n_train + n_test} valid rows, fewer than min_rows={params.min_rows}: too few to train. "
                "Add data or lower min_rows."
            )
        if n_train == 0 or n_test == 0:
            raise TrainingError(
                f"train_fraction={params.train_fraction} left {n_train} training and {n_test} test rows"
            )
        model, best_params = _fit(pipeline, train, params)
    predictions = model.transform(test)
    return TrainResult(
        model=model,
        metrics=regression_metrics(predictions, label=LABEL, prediction=PREDICTION),
        train=train,
        test=test,
        predictions=predictions,
        rows_train=n_train,
        rows_test=n_test,
        best_params=best_params,
    )
