"""Job parameters: the one source of truth for widget names, CLI flags, defaults and validation.

Every field of a params dataclass is a notebook widget of the same name and a CLI flag with ``-``
for ``_`` (``model_name`` <-> ``--model-name``). Widgets deliver strings, so :func:`from_strings`
converts and validates them; a bad value raises :class:`ParamError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from diabetes_spark.errors import ParamError
from diabetes_spark.param_text import describe as describe
from diabetes_spark.param_text import from_strings as from_strings
from diabetes_spark.param_text import parse_assignments as parse_assignments
from diabetes_spark.param_text import widget_defaults as widget_defaults
from diabetes_spark.thresholds import THRESHOLD_FORM, parse_thresholds

ESTIMATORS = ("linear", "gbt", "random_forest")
TUNING_MODES = ("none", "train_validation_split", "cross_validation")
IMPUTER_STRATEGIES = ("mean", "median")
WRITE_MODES = ("append", "overwrite")
#: The metrics the champion/challenger gate compares (``TrainParams.primary_metric`` spells them as its type).
PRIMARY_METRICS = ("rmse", "mae", "r2")
#: An on/off parameter: a widget holds the string; ``--flag`` alone on the command line means true.
SWITCH = ("false", "true")
#: ``validation_mode``: judge and block, judge and record only, or do not judge.
VALIDATION_MODES = ("enabled", "dry_run", "disabled")
#: ``promotion_mode``: the gate moves champion, or training only sets challenger and a person promotes.
PROMOTION_MODES = ("auto", "manual")
#: Help of ``alias_ledger``, a parameter of every job that reads or moves a model's aliases.
ALIAS_LEDGER_HELP = (
    "Delta table recording every move of champion and challenger (path or catalog.schema.table; empty: "
    "model_alias_events under DIABETES_SPARK_HOME locally, in the session's catalog and schema on Databricks)"
)
#: The telemetry backends, the first the default (``diabetes_spark.telemetry`` has one module each).
TELEMETRY_BACKENDS = ("opencensus", "opentelemetry")

DEFAULT_EXPERIMENT = "diabetes-progression"
DEFAULT_MODEL_NAME = "diabetes_progression"
#: Widget defaults in a Databricks workspace, where the local ones would not work: no storage secrets
#: (Unity Catalog grants the access), an experiment in the user's folder (experiments are workspace
#: paths), a catalog.schema.model name (the Unity Catalog registry). ``{user}``, ``{catalog}`` and
#: ``{schema}`` are the session's ``current_user()``, ``current_catalog()`` and ``current_database()``,
#: read by the notebooks' widget cell (tests/make_notebooks.py writes it).
WORKSPACE_DEFAULTS = {
    "storage_account_secret": "",
    "storage_container_secret": "",
    "storage_key_secret": "",
    "experiment": "/Users/{user}/" + DEFAULT_EXPERIMENT,
    "model_name": "{catalog}.{schema}." + DEFAULT_MODEL_NAME,
}

#: Help of ``dfs_tmpdir``, a parameter of both jobs that load or log a model.
DFS_TMPDIR_HELP = (
    "folder mlflow.spark copies models through: a /Volumes/<catalog>/<schema>/<volume>/... path on standard "
    "access and serverless compute (empty: $MLFLOW_DFS_TMP, else MLflow's default)"
)
#: Help of ``telemetry_backend``, a parameter of every job.
TELEMETRY_BACKEND_HELP = (
    "telemetry SDK sending to Application Insights: opencensus, or opentelemetry (needs "
    "diabetes_spark[opentelemetry]; required for Entra ID, Authorization=AAD) "
    "(empty: $DIABETES_SPARK_TELEMETRY_BACKEND, else opencensus)"
)
BATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def _param(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field carrying the help text (and allowed values) used by the CLI and notebooks."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _telemetry_backend() -> Any:
    """The ``telemetry_backend`` field of every job's params, declared here once."""
    return _param("", TELEMETRY_BACKEND_HELP)


def _check_required(name: str, value: str) -> None:
    if not str(value).strip():
        raise ParamError(f"{name} is required; got an empty value. Set the widget or --{name.replace('_', '-')}")


def _check_fraction(name: str, value: float, *, low_open: bool, high_open: bool) -> None:
    too_low = value <= 0 if low_open else value < 0
    too_high = value >= 1 if high_open else value > 1
    if too_low or too_high:
        low, high = ("(" if low_open else "["), (")" if high_open else "]")
        raise ParamError(f"{name} must be in {low}0, 1{high}; got {value!r}")


def _check_model_name(name: str) -> None:
    """MLflow's rule for registered model names, checked before any work is done."""
    if "/" in name or ":" in name:
        raise ParamError(f"model_name may not hold '/' or ':' (MLflow's rule for model names); got {name!r}")


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ParamError(f"{name} must be > 0; got {value!r}")


@dataclass(frozen=True)
class _Common:
    """Settings shared by every job that reads a table and may reject rows."""

    def _check_common(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
                raise ParamError(f"{f.name} must be a finite number; got {value!r}")
            choices = f.metadata.get("choices")
            if choices:
                _check_choice(f.name, getattr(self, f.name), choices)
        backend = getattr(self, "telemetry_backend", "")
        if backend:
            _check_choice("telemetry_backend", backend, TELEMETRY_BACKENDS)
        if hasattr(self, "max_reject_fraction"):
            _check_fraction("max_reject_fraction", self.max_reject_fraction, low_open=False, high_open=False)


@dataclass(frozen=True)
class IngestParams(_Common):
    """Land a raw CSV in a Delta table, rejects in a second table."""

    source: str = _param("", "CSV file to ingest (local path, dbfs:/, abfss://)")
    table: str = _param("", "Delta table to write: path, abfss:// URI or catalog.schema.table")
    rejects: str = _param("", "Delta table for rejected rows (default: <table>_rejects)")
    mode: str = _param("append", "append or overwrite the target tables", choices=WRITE_MODES)
    max_reject_fraction: float = _param(1.0, "fail without writing if more than this share of rows is rejected")
    telemetry_backend: str = _telemetry_backend()

    def __post_init__(self) -> None:
        _check_required("source", self.source)
        _check_required("table", self.table)
        self._check_common()


@dataclass(frozen=True)
class TrainParams(_Common):
    """Train, evaluate, log, register and (maybe) promote a model."""

    training_data: str = _param(
        "", "training table or file (Delta path, abfss://, catalog.schema.table, .csv, .parquet)"
    )
    experiment: str = _param(DEFAULT_EXPERIMENT, "MLflow experiment name (a /Users/... path on Databricks)")
    model_name: str = _param(DEFAULT_MODEL_NAME, "registered model name (catalog.schema.model for Unity Catalog)")
    estimator: str = _param("linear", "estimator to fit", choices=ESTIMATORS)
    reg_param: float = _param(0.01, "linear: regularisation strength (>= 0)")
    elastic_net_param: float = _param(0.0, "linear: elastic-net mixing, 0 = ridge (L2), 1 = lasso (L1)")
    max_iter: int = _param(100, "linear: maximum iterations")
    num_trees: int = _param(50, "random_forest: number of trees")
    max_depth: int = _param(4, "gbt / random_forest: maximum tree depth")
    imputer_strategy: str = _param("mean", "how empty numeric values are imputed", choices=IMPUTER_STRATEGIES)
    train_fraction: float = _param(0.8, "share of valid rows used for fitting; the rest is the held-out test split")
    seed: int = _param(42, "seed of the train/test split and of the estimators")
    tuning: str = _param("none", "hyper-parameter search over a small grid", choices=TUNING_MODES)
    num_folds: int = _param(3, "folds for cross_validation")
    min_rows: int = _param(30, "minimum number of valid rows required to train")
    primary_metric: Literal["rmse", "mae", "r2"] = _param(
        "rmse", "metric of the champion/challenger gate", choices=PRIMARY_METRICS
    )
    max_reject_fraction: float = _param(0.2, "fail before training if more than this share of rows is rejected")
    validation_thresholds: str = _param(
        "", f"bounds the new version must meet on all held-out rows: {THRESHOLD_FORM} (empty: none)"
    )
    min_improvement: float = _param(
        0.0,
        "relative improvement over the champion on primary_metric the new version must reach, in [0, 1] "
        "(MLflow's min_relative_change; 0: not judged)",
    )
    validation_mode: str = _param(
        "enabled",
        "enabled: a version missing a threshold is not promoted and the job fails; dry_run: the verdict is "
        "only recorded; disabled: no thresholds",
        choices=VALIDATION_MODES,
    )
    promotion_mode: str = _param(
        "auto",
        "auto: the gate moves champion to a better version; manual: training only sets challenger and a person "
        "promotes (diabetes-spark promote)",
        choices=PROMOTION_MODES,
    )
    alias_ledger: str = _param("", ALIAS_LEDGER_HELP)
    dfs_tmpdir: str = _param("", DFS_TMPDIR_HELP)
    telemetry_backend: str = _telemetry_backend()

    def __post_init__(self) -> None:
        parse_thresholds(self.validation_thresholds)  # before anything is read
        _check_fraction("min_improvement", self.min_improvement, low_open=False, high_open=False)
        _check_required("training_data", self.training_data)
        _check_required("experiment", self.experiment)
        _check_required("model_name", self.model_name)
        _check_model_name(self.model_name)
        self._check_common()
        if self.reg_param < 0:
            raise ParamError(f"reg_param must be >= 0; got {self.reg_param!r}")
        _check_fraction("elastic_net_param", self.elastic_net_param, low_open=False, high_open=False)
        _check_fraction("train_fraction", self.train_fraction, low_open=True, high_open=True)
        for name in ("max_iter", "num_trees", "max_depth", "min_rows"):
            _check_positive(name, getattr(self, name))
        if self.num_folds < 2:
            raise ParamError(f"num_folds must be >= 2; got {self.num_folds!r}")


@dataclass(frozen=True)
class ScoreParams(_Common):
    """Score a table with a registered model and write predictions with lineage."""

    input: str = _param("", "table or file to score (Delta path, abfss://, catalog.schema.table, .csv, .parquet)")
    output: str = _param("", "predictions Delta table (path, abfss:// URI or catalog.schema.table)")
    model_name: str = _param(DEFAULT_MODEL_NAME, "registered model name")
    model_version: str = _param("", "model version to use (overrides model_alias)")
    model_alias: str = _param("champion", "model alias to use when no version is given")
    batch_id: str = _param("", "batch identifier (default: derived from the input, e.g. its Delta version)")
    rejects: str = _param("", "Delta table for rejected rows (default: <output>_rejects)")
    experiment: str = _param(DEFAULT_EXPERIMENT, "MLflow experiment for the scoring run")
    max_reject_fraction: float = _param(0.2, "fail before writing if more than this share of rows is rejected")
    drift_threshold: float = _param(0.2, "population stability index above which a feature is flagged as drifted")
    shadow: str = _param(
        "false",
        "true: also score the batch with the challenger (when it is another version) into shadow_output",
        choices=SWITCH,
    )
    shadow_output: str = _param(
        "", "Delta table of the challenger's predictions with --shadow (default: <output>_shadow)"
    )
    shadow_tolerance: float = _param(1.0, "--shadow: predictions differing by more than this count as different")
    incremental: str = _param(
        "false",
        "true: score only the rows of a Delta input committed since the last incremental run into output, exactly "
        "once (Structured Streaming, availableNow, a checkpoint)",
        choices=SWITCH,
    )
    checkpoint_location: str = _param(
        "",
        "--incremental: the folder of its streaming checkpoint (default: <output>_checkpoint beside a Delta path; "
        "a /Volumes/... folder for a catalog table on Databricks)",
    )
    alias_ledger: str = _param("", ALIAS_LEDGER_HELP)
    dfs_tmpdir: str = _param("", DFS_TMPDIR_HELP)
    telemetry_backend: str = _telemetry_backend()

    def __post_init__(self) -> None:
        _check_required("input", self.input)
        _check_required("output", self.output)
        _check_required("model_name", self.model_name)
        _check_model_name(self.model_name)
        self._check_common()
        if self.model_version and not self.model_version.isdigit():
            raise ParamError(f"model_version must be a whole number like '3'; got {self.model_version!r}")
        if not self.model_version and not self.model_alias.strip():
            raise ParamError("model_version or model_alias must be set; both are empty")
        _check_positive("drift_threshold", self.drift_threshold)
        _check_positive("shadow_tolerance", self.shadow_tolerance)
        if self.batch_id and not BATCH_ID_PATTERN.fullmatch(self.batch_id):
            raise ParamError(f"batch_id may hold letters, digits and . _ : @ - (at most 128); got {self.batch_id!r}")
        if self.incremental == "true" and self.batch_id:
            raise ParamError(
                f"batch_id {self.batch_id!r} cannot be given with incremental: each incremental batch is named after "
                "the input versions it covers. Leave batch_id empty, or score without incremental"
            )


@dataclass(frozen=True)
class NotebookParams(_Common):
    """What a Databricks notebook needs beyond its job's parameters: the wheel, secrets, job ids.

    The secret widgets hold secret *key names* in ``secret_scope``, never values. Storage access,
    in the order Databricks recommends it: with every storage widget empty the job sets no Spark
    setting at all and reads what Unity Catalog grants (catalog tables, volumes, external
    locations); with ``storage_client_id_secret`` set, a service principal signs in with OAuth for
    that account only; otherwise ``storage_key_secret`` names the shared account key. A non-empty
    ``storage_account_secret`` (with ``storage_container_secret``) also roots relative table paths
    at that container.
    """

    wheel: str = _param("", "wheel to %pip install (dbfs:/, /Workspace/ or /Volumes/ path); empty: already installed")
    secret_scope: str = _param("diabetes-spark", "Databricks secret scope holding the secrets below")
    appinsights_secret: str = _param(
        "appinsights-connection-string",
        "secret key: App Insights connection string or instrumentation key (missing secret: console-only telemetry)",
    )
    storage_account_secret: str = _param(
        "adls-account-name", "secret key: ADLS Gen2 storage account name (empty: Unity Catalog access only)"
    )
    storage_container_secret: str = _param("adls-container-name", "secret key: ADLS Gen2 container name")
    storage_key_secret: str = _param(
        "adls-account-key", "secret key: ADLS Gen2 shared access key (empty: no key; OAuth or Unity Catalog)"
    )
    storage_client_id_secret: str = _param(
        "", "secret key: application (client) id of a service principal for OAuth to ADLS Gen2 (empty: no OAuth)"
    )
    storage_client_secret_secret: str = _param("", "secret key: that service principal's client secret")
    storage_tenant_id_secret: str = _param("", "secret key: that service principal's Entra ID tenant id")
    databricks_job_id: str = _param(
        "", "Databricks job id, for telemetry and the MLflow run's tags (the job sets {{job.id}})"
    )
    databricks_run_id: str = _param(
        "", "Databricks job run id, for telemetry and the MLflow run's tags (the job sets {{job.run_id}})"
    )

    def __post_init__(self) -> None:
        _check_required("secret_scope", self.secret_scope)
        self._check_common()


def notebook_widgets(job_params: type) -> dict[str, str]:
    """Every widget a notebook running ``job_params`` declares: name -> default, in order."""
    return {**widget_defaults(NotebookParams), **widget_defaults(job_params)}
