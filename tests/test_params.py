from __future__ import annotations

from typing import get_args, get_type_hints

import pytest

from diabetes_spark import params
from diabetes_spark.errors import ParamError


def test_widget_strings_are_converted_to_field_types() -> None:
    p = params.from_strings(
        params.TrainParams,
        {"training_data": " t ", "seed": "7", "train_fraction": "0.75", "estimator": "gbt"},
    )
    assert (p.training_data, p.seed, p.train_fraction, p.estimator) == ("t", 7, 0.75, "gbt")
    assert p.model_name == params.DEFAULT_MODEL_NAME


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (params.TrainParams, {"training_data": "t", "seed": "x"}, "seed must be an int; got 'x'"),
        (
            params.TrainParams,
            {"training_data": "t", "train_fraction": "1.5"},
            "train_fraction must be in (0, 1); got 1.5",
        ),
        (
            params.TrainParams,
            {"training_data": "t", "estimator": "svm"},
            "estimator must be one of linear, gbt, random_forest; got 'svm'",
        ),
        (params.TrainParams, {"training_data": ""}, "training_data is required"),
        (params.TrainParams, {"training_data": "t", "num_folds": "1"}, "num_folds must be >= 2; got 1"),
        (
            params.ScoreParams,
            {"input": "i", "output": "o", "model_version": "v2"},
            "model_version must be a whole number",
        ),
        (
            params.ScoreParams,
            {"input": "i", "output": "o", "model_alias": " "},
            "model_version or model_alias must be set",
        ),
        (
            params.IngestParams,
            {"source": "s", "table": "t", "mode": "merge"},
            "mode must be one of append, overwrite; got 'merge'",
        ),
        (params.IngestParams, {"source": "s", "table": "t", "bogus": "1"}, "unknown parameter(s) ['bogus']"),
        (
            params.ScoreParams,
            {"input": "i", "output": "o", "telemetry_backend": "zipkin"},
            "telemetry_backend must be one of opencensus, opentelemetry; got 'zipkin'",
        ),
    ],
)
def test_bad_values_name_the_parameter(cls: type, values: dict[str, str], message: str) -> None:
    with pytest.raises(ParamError) as info:
        params.from_strings(cls, values)
    assert message in str(info.value)


def test_widget_defaults_are_the_dataclass_defaults_as_strings() -> None:
    defaults = params.widget_defaults(params.ScoreParams)
    assert defaults["model_alias"] == "champion"
    assert defaults["max_reject_fraction"] == "0.2"
    assert list(defaults) == [name for name, *_ in params.describe(params.ScoreParams)]


def test_the_primary_metric_type_spells_the_allowed_metrics() -> None:
    assert get_args(get_type_hints(params.TrainParams)["primary_metric"]) == params.PRIMARY_METRICS


@pytest.mark.parametrize("cls", [params.IngestParams, params.TrainParams, params.ScoreParams])
def test_every_job_takes_the_telemetry_backend_as_a_widget_and_a_flag(cls: type) -> None:
    from diabetes_spark import cli

    assert params.widget_defaults(cls)["telemetry_backend"] == ""  # empty: the environment's, else opencensus
    command = {params.IngestParams: "ingest", params.TrainParams: "train", params.ScoreParams: "score"}[cls]
    required = {"ingest": ["--source", "s", "--table", "t"], "train": ["--training-data", "t"]}
    argv = [command, *required.get(command, ["--input", "i", "--output", "o"]), "--telemetry-backend", "opentelemetry"]
    assert cli.build_parser().parse_args(argv).telemetry_backend == "opentelemetry"
