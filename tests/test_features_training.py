from __future__ import annotations

import bisect
import math

import pytest
from chispa import assert_df_equality
from pyspark.ml import Pipeline
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from diabetes_spark import drift, evaluation, schemas, storage, training
from diabetes_spark.errors import TrainingError
from diabetes_spark.features import SEX_VECTOR, build_feature_stages, imputed_name
from diabetes_spark.params import TrainParams

RAW = schemas.load_schema("training_raw")


def _frame(spark, rows: list[dict]):
    full = [tuple(r.get(c) for c in RAW.fieldNames()) for r in rows]
    return spark.createDataFrame(full, RAW)


@pytest.mark.parametrize(("strategy", "expected"), [("mean", 4.0), ("median", 2.0)])
def test_imputer_fills_empty_numeric_values(spark, strategy: str, expected: float) -> None:
    df = _frame(spark, [{"BMI": 1.0, "SEX": "M"}, {"BMI": 2.0, "SEX": "F"}, {"BMI": 9.0, "SEX": "M"}, {"SEX": "F"}])
    imputer = build_feature_stages(imputer_strategy=strategy)[0]
    out = imputer.fit(df.fillna(0.0, subset=[c for c in schemas.numeric_feature_names() if c != "BMI"])).transform(df)
    got = out.select(imputed_name("BMI"))
    want = spark.createDataFrame([(1.0,), (2.0,), (9.0,), (expected,)], f"{imputed_name('BMI')} double")
    assert_df_equality(got, want, ignore_nullable=True)


def test_sex_encoding_known_and_unseen_categories(spark) -> None:
    stages = build_feature_stages()
    encoder = Pipeline(stages=stages[1:3]).fit(_frame(spark, [{"SEX": "M"}, {"SEX": "F"}, {"SEX": "M"}]))
    scored = encoder.transform(_frame(spark, [{"SEX": "F"}, {"SEX": "M"}, {"SEX": "X"}, {"SEX": None}]))
    got = scored.select("SEX", SEX_VECTOR)
    want = spark.createDataFrame(
        [
            ("F", Vectors.sparse(3, [0], [1.0])),
            ("M", Vectors.sparse(3, [1], [1.0])),
            ("X", Vectors.sparse(3, [2], [1.0])),  # unseen and empty share the "unknown" slot
            (None, Vectors.sparse(3, [2], [1.0])),
        ],
        StructType([StructField("SEX", StringType()), StructField(SEX_VECTOR, VectorUDT())]),
    )
    assert_df_equality(got, want, ignore_nullable=True, ignore_metadata=True)


def test_metrics_match_a_hand_computed_case(spark) -> None:
    df = spark.createDataFrame([(3.0, 2.5), (-0.5, 0.0), (2.0, 2.0), (7.0, 8.0)], "Y double, prediction double")
    got = evaluation.regression_metrics(df, label="Y", prediction="prediction")
    # residuals 0.5, -0.5, 0, -1 -> SSE 1.5; mean(Y) = 2.875 -> SST 29.1875
    want = {"mse": 0.375, "rmse": math.sqrt(0.375), "mae": 0.5, "r2": 1 - 1.5 / 29.1875}
    assert got == pytest.approx(want, rel=1e-12)
    assert evaluation.is_better("rmse", 1.0, 2.0) and not evaluation.is_better("r2", 0.1, 0.2)


@pytest.fixture(scope="module")
def sample_valid(spark):
    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    valid, _ = schemas.split_valid(raw, RAW, required=("Y",), source="sample", batch_id="t")
    return valid.cache()


@pytest.fixture(scope="module")
def default_result(sample_valid) -> training.TrainResult:
    return training.fit(sample_valid, TrainParams(training_data="sample:diabetes.csv"))


def test_split_is_seeded_and_complete(sample_valid) -> None:
    a_train, a_test = training.split(sample_valid, train_fraction=0.8, seed=42)
    _, b_test = training.split(sample_valid, train_fraction=0.8, seed=42)
    assert_df_equality(a_test, b_test, ignore_row_order=True)
    assert a_train.count() + a_test.count() == sample_valid.count() == 437


def test_default_pipeline_is_within_3_percent_of_sklearn_ridge(default_result: training.TrainResult) -> None:
    """Quality bar: the same rows and split, mean imputation and one-hot SEX, scikit-learn Ridge."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_squared_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = schemas.numeric_feature_names()
    train = default_result.train.toPandas()
    test = default_result.test.toPandas()
    reference = make_pipeline(
        make_column_transformer(
            (SimpleImputer(strategy="mean"), numeric),
            (OneHotEncoder(handle_unknown="ignore"), ["SEX"]),
        ),
        Ridge(alpha=1.0),
    ).fit(train[schemas.feature_names()], train["Y"])
    ridge_rmse = math.sqrt(mean_squared_error(test["Y"], reference.predict(test[schemas.feature_names()])))
    spark_rmse = default_result.metrics["rmse"]
    print(f"spark rmse {spark_rmse:.3f}, sklearn ridge rmse {ridge_rmse:.3f}")
    assert abs(spark_rmse - ridge_rmse) / ridge_rmse <= 0.03


def test_fitted_pipeline_carries_every_step_and_scores_unseen_sex(spark, default_result) -> None:
    row = {c: 1.0 for c in schemas.numeric_feature_names()}
    df = _frame(spark, [{**row, "SEX": "F"}, {**row, "SEX": "unknown"}, {**row, "SEX": None, "BMI": None}])
    predictions = [r.prediction for r in default_result.model.transform(df).collect()]
    assert len(predictions) == 3 and all(math.isfinite(p) for p in predictions)


@pytest.mark.parametrize("estimator", ["gbt", "random_forest"])
def test_tree_estimators_train(sample_valid, estimator: str) -> None:
    result = training.fit(sample_valid, TrainParams(training_data="x", estimator=estimator, num_trees=10, max_depth=3))
    assert 0.0 < result.metrics["r2"] < 1.0
    assert sorted(n for n, _ in evaluation.model_weights(result.model)) == sorted(
        [*schemas.numeric_feature_names(), "SEX=F", "SEX=M", "SEX=unknown"]
    )


def test_tuning_picks_from_the_grid(sample_valid) -> None:
    result = training.fit(sample_valid, TrainParams(training_data="x", tuning="train_validation_split"))
    assert result.best_params["regParam"] in (0.0, 0.01, 0.1, 1.0)
    assert result.best_params["elasticNetParam"] in (0.0, 0.5)


def test_too_few_rows_is_a_clear_error(sample_valid) -> None:
    with pytest.raises(TrainingError, match="10 valid rows, fewer than min_rows=30"):
        training.fit(sample_valid.limit(10), TrainParams(training_data="x"))


def test_metrics_equal_spark_regression_evaluator(default_result) -> None:
    from pyspark.ml.evaluation import RegressionEvaluator

    evaluator = RegressionEvaluator(labelCol="Y", predictionCol="prediction")
    want = {m: evaluator.setMetricName(m).evaluate(default_result.predictions) for m in evaluation.METRICS}
    assert default_result.metrics == pytest.approx(want, rel=1e-9)


def test_statistics_and_profile_edges_match_spark_quantiles(sample_valid) -> None:
    numeric = schemas.numeric_feature_names()
    profile, stats = drift.profile_and_statistics(sample_valid)
    deciles = sample_valid.approxQuantile(numeric, [i / 10 for i in range(1, 10)], 0.001)
    quartiles = sample_valid.approxQuantile(numeric, [0.25, 0.5, 0.75], 0.001)
    for c, edges, q, s in zip(numeric, deciles, quartiles, stats):
        assert profile["bins"][c] == pytest.approx(sorted(set(edges)), rel=1e-12), c
        assert [s["p25"], s["median"], s["p75"]] == pytest.approx(q, rel=1e-12), c
        assert s["count"] == sample_valid.filter(F.col(c).isNotNull()).count()
    assert profile["bins"]["SEX"] == sorted(r[0] for r in sample_valid.select("SEX").distinct().collect() if r[0])


@pytest.mark.parametrize("joint_codes", [1, 200, drift.JOINT_CODES])  # one feature a code, two, three or four
def test_profile_counts_equal_binning_each_row_in_python(sample_valid, monkeypatch, joint_codes) -> None:
    monkeypatch.setattr(drift, "JOINT_CODES", joint_codes)
    profile = drift.profile_and_statistics(sample_valid)[0]
    codes_per_row = len(drift.BinCodes(profile).columns)
    assert codes_per_row == len(profile["bins"]) if joint_codes == 1 else codes_per_row < len(profile["bins"])
    frame = (
        sample_valid.withColumn("BMI", F.col("BMI") * 1.4)
        .withColumn("SEX", F.when(F.col("AGE") > 60, F.lit("X")).otherwise(F.col("SEX")))
        .withColumn("S1", F.when(F.col("AGE") < 30, F.lit(None)).otherwise(F.col("S1")))
    )
    rows = frame.filter(F.col("S3") > 40).select(*profile["bins"]).collect()
    expected = dict.fromkeys(drift.bin_names(profile), 0)
    expected["__rows"] = len(rows)
    for row in rows:
        for feature, edges in profile["bins"].items():
            value = row[feature]
            if value is None:
                label = "missing"
            elif feature in schemas.CATEGORICAL:
                label = value if value in edges else "other"
            else:
                label = str(bisect.bisect_right(edges, value))  # bins are [lower, upper)
            expected[f"{feature}__{label}"] += 1
    assert drift.profile_counts(frame, profile, where=F.col("S3") > 40) == expected
    top_bmi = f"BMI__{len(profile['bins']['BMI'])}"  # above the last edge: the shift moved rows there
    assert expected["SEX__other"] > 0 and expected["S1__missing"] > 0 and expected[top_bmi] > 0


def test_psi_is_near_zero_for_the_same_data_and_large_for_a_shift(spark, sample_valid) -> None:
    profile = drift.profile_and_statistics(sample_valid)[0]
    same = drift.profile_counts(sample_valid, profile)
    shifted_df = sample_valid.withColumn("BMI", F.col("BMI") * 1.4).withColumn("SEX", F.lit("X"))
    shifted = drift.profile_counts(shifted_df, profile)
    assert max(drift.psi_from_counts(profile, same).values()) < 0.01
    psi = drift.psi_from_counts(profile, shifted)
    assert psi["BMI"] > 1.0 and psi["SEX"] > 1.0 and psi["AGE"] < 0.01
