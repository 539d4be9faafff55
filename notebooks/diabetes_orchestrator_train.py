# Databricks notebook source
# MAGIC %md
# MAGIC # Diabetes progression: training orchestrator
# MAGIC
# MAGIC Reads the training table, validates it, fits the Spark ML pipeline, evaluates it, logs params, metrics,
# MAGIC reports and the model to MLflow, registers a version and promotes it to `champion` only if it is better.
# MAGIC
# MAGIC Run by the Databricks Job `diabetes-retraining` (see `resources/`). Parameters (widgets; names and defaults
# MAGIC are those of `diabetes_spark.params.NotebookParams` and `TrainParams`, and a test keeps them equal):
# MAGIC
# MAGIC (generated from diabetes_spark/params.py by tests/make_notebooks.py)
# MAGIC
# MAGIC | widget | default | meaning |
# MAGIC |---|---|---|
# MAGIC | `wheel` | `` | wheel to %pip install (dbfs:/, /Workspace/ or /Volumes/ path); empty: already installed |
# MAGIC | `secret_scope` | `diabetes-spark` | Databricks secret scope holding the secrets below |
# MAGIC | `appinsights_secret` | `appinsights-connection-string` | secret key: App Insights connection string or instrumentation key (missing secret: console-only telemetry) |
# MAGIC | `storage_account_secret` | `adls-account-name` (Databricks: empty) | secret key: ADLS Gen2 storage account name (empty: Unity Catalog access only) |
# MAGIC | `storage_container_secret` | `adls-container-name` (Databricks: empty) | secret key: ADLS Gen2 container name |
# MAGIC | `storage_key_secret` | `adls-account-key` (Databricks: empty) | secret key: ADLS Gen2 shared access key (empty: no key; OAuth or Unity Catalog) |
# MAGIC | `storage_client_id_secret` | `` | secret key: application (client) id of a service principal for OAuth to ADLS Gen2 (empty: no OAuth) |
# MAGIC | `storage_client_secret_secret` | `` | secret key: that service principal's client secret |
# MAGIC | `storage_tenant_id_secret` | `` | secret key: that service principal's Entra ID tenant id |
# MAGIC | `databricks_job_id` | `` | Databricks job id, for telemetry and the MLflow run's tags (the job sets {{job.id}}) |
# MAGIC | `databricks_run_id` | `` | Databricks job run id, for telemetry and the MLflow run's tags (the job sets {{job.run_id}}) |
# MAGIC | `training_data` | `` | training table or file (Delta path, abfss://, catalog.schema.table, .csv, .parquet) |
# MAGIC | `experiment` | `diabetes-progression` (Databricks: `/Users/{user}/diabetes-progression`) | MLflow experiment name (a /Users/... path on Databricks) |
# MAGIC | `model_name` | `diabetes_progression` (Databricks: `{catalog}.{schema}.diabetes_progression`) | registered model name (catalog.schema.model for Unity Catalog) |
# MAGIC | `estimator` | `linear` | estimator to fit (linear, gbt, random_forest) |
# MAGIC | `reg_param` | `0.01` | linear: regularisation strength (>= 0) |
# MAGIC | `elastic_net_param` | `0.0` | linear: elastic-net mixing, 0 = ridge (L2), 1 = lasso (L1) |
# MAGIC | `max_iter` | `100` | linear: maximum iterations |
# MAGIC | `num_trees` | `50` | random_forest: number of trees |
# MAGIC | `max_depth` | `4` | gbt / random_forest: maximum tree depth |
# MAGIC | `imputer_strategy` | `mean` | how empty numeric values are imputed (mean, median) |
# MAGIC | `train_fraction` | `0.8` | share of valid rows used for fitting; the rest is the held-out test split |
# MAGIC | `seed` | `42` | seed of the train/test split and of the estimators |
# MAGIC | `tuning` | `none` | hyper-parameter search over a small grid (none, train_validation_split, cross_validation) |
# MAGIC | `num_folds` | `3` | folds for cross_validation |
# MAGIC | `min_rows` | `30` | minimum number of valid rows required to train |
# MAGIC | `primary_metric` | `rmse` | metric of the champion/challenger gate (rmse, mae, r2) |
# MAGIC | `max_reject_fraction` | `0.2` | fail before training if more than this share of rows is rejected |
# MAGIC | `validation_thresholds` | `` | bounds the new version must meet on all held-out rows: comma-separated METRIC<=NUMBER for rmse, mae, mse and METRIC>=NUMBER for r2, e.g. rmse<=60,r2>=0.35 (empty: none) |
# MAGIC | `min_improvement` | `0.0` | relative improvement over the champion on primary_metric the new version must reach, in [0, 1] (MLflow's min_relative_change; 0: not judged) |
# MAGIC | `validation_mode` | `enabled` | enabled: a version missing a threshold is not promoted and the job fails; dry_run: the verdict is only recorded; disabled: no thresholds (enabled, dry_run, disabled) |
# MAGIC | `promotion_mode` | `auto` | auto: the gate moves champion to a better version; manual: training only sets challenger and a person promotes (diabetes-spark promote) (auto, manual) |
# MAGIC | `alias_ledger` | `` | Delta table recording every move of champion and challenger (path or catalog.schema.table; empty: model_alias_events under DIABETES_SPARK_HOME locally, in the session's catalog and schema on Databricks) |
# MAGIC | `dfs_tmpdir` | `` | folder mlflow.spark copies models through: a /Volumes/<catalog>/<schema>/<volume>/... path on standard access and serverless compute (empty: $MLFLOW_DFS_TMP, else MLflow's default) |
# MAGIC | `telemetry_backend` | `` | telemetry SDK sending to Application Insights: opencensus, or opentelemetry (needs diabetes_spark[opentelemetry]; required for Entra ID, Authorization=AAD) (empty: $DIABETES_SPARK_TELEMETRY_BACKEND, else opencensus) |
# MAGIC
# MAGIC Off Databricks: `diabetes-spark notebook notebooks/diabetes_orchestrator_train.py --widget name=value ...`

# COMMAND ----------

# Widgets: every parameter, declared once, each under its help.
# Generated from diabetes_spark/params.py by tests/make_notebooks.py: edit the help there.
# On Databricks the defaults that only work locally are the workspace's (params.WORKSPACE_DEFAULTS): Unity
# Catalog storage access, an experiment in your folder, a model in the session's catalog and schema.
import os

workspace = "DATABRICKS_RUNTIME_VERSION" in os.environ
if workspace:
    user, catalog, schema = spark.sql("SELECT current_user(), current_catalog(), current_database()").first()

# wheel to %pip install (dbfs:/, /Workspace/ or /Volumes/ path); empty: already installed
dbutils.widgets.text("wheel", "")
# Databricks secret scope holding the secrets below
dbutils.widgets.text("secret_scope", "diabetes-spark")
# secret key: App Insights connection string or instrumentation key (missing secret: console-only telemetry)
dbutils.widgets.text("appinsights_secret", "appinsights-connection-string")
# secret key: ADLS Gen2 storage account name (empty: Unity Catalog access only)
dbutils.widgets.text("storage_account_secret", "" if workspace else "adls-account-name")
# secret key: ADLS Gen2 container name
dbutils.widgets.text("storage_container_secret", "" if workspace else "adls-container-name")
# secret key: ADLS Gen2 shared access key (empty: no key; OAuth or Unity Catalog)
dbutils.widgets.text("storage_key_secret", "" if workspace else "adls-account-key")
# secret key: application (client) id of a service principal for OAuth to ADLS Gen2 (empty: no OAuth)
dbutils.widgets.text("storage_client_id_secret", "")
# secret key: that service principal's client secret
dbutils.widgets.text("storage_client_secret_secret", "")
# secret key: that service principal's Entra ID tenant id
dbutils.widgets.text("storage_tenant_id_secret", "")
# Databricks job id, for telemetry and the MLflow run's tags (the job sets {{job.id}})
dbutils.widgets.text("databricks_job_id", "")
# Databricks job run id, for telemetry and the MLflow run's tags (the job sets {{job.run_id}})
dbutils.widgets.text("databricks_run_id", "")
# training table or file (Delta path, abfss://, catalog.schema.table, .csv, .parquet)
dbutils.widgets.text("training_data", "")
# MLflow experiment name (a /Users/... path on Databricks)
dbutils.widgets.text("experiment", f"/Users/{user}/diabetes-progression" if workspace else "diabetes-progression")
# registered model name (catalog.schema.model for Unity Catalog)
dbutils.widgets.text("model_name", f"{catalog}.{schema}.diabetes_progression" if workspace else "diabetes_progression")
# estimator to fit (linear, gbt, random_forest)
dbutils.widgets.text("estimator", "linear")
# linear: regularisation strength (>= 0)
dbutils.widgets.text("reg_param", "0.01")
# linear: elastic-net mixing, 0 = ridge (L2), 1 = lasso (L1)
dbutils.widgets.text("elastic_net_param", "0.0")
# linear: maximum iterations
dbutils.widgets.text("max_iter", "100")
# random_forest: number of trees
dbutils.widgets.text("num_trees", "50")
# gbt / random_forest: maximum tree depth
dbutils.widgets.text("max_depth", "4")
# how empty numeric values are imputed (mean, median)
dbutils.widgets.text("imputer_strategy", "mean")
# share of valid rows used for fitting; the rest is the held-out test split
dbutils.widgets.text("train_fraction", "0.8")
# seed of the train/test split and of the estimators
dbutils.widgets.text("seed", "42")
# hyper-parameter search over a small grid (none, train_validation_split, cross_validation)
dbutils.widgets.text("tuning", "none")
# folds for cross_validation
dbutils.widgets.text("num_folds", "3")
# minimum number of valid rows required to train
dbutils.widgets.text("min_rows", "30")
# metric of the champion/challenger gate (rmse, mae, r2)
dbutils.widgets.text("primary_metric", "rmse")
# fail before training if more than this share of rows is rejected
dbutils.widgets.text("max_reject_fraction", "0.2")
# bounds the new version must meet on all held-out rows: comma-separated METRIC<=NUMBER for rmse, mae, mse and METRIC>=NUMBER for r2, e.g. rmse<=60,r2>=0.35 (empty: none)
dbutils.widgets.text("validation_thresholds", "")
# relative improvement over the champion on primary_metric the new version must reach, in [0, 1] (MLflow's min_relative_change; 0: not judged)
dbutils.widgets.text("min_improvement", "0.0")
# enabled: a version missing a threshold is not promoted and the job fails; dry_run: the verdict is only recorded; disabled: no thresholds (enabled, dry_run, disabled)
dbutils.widgets.text("validation_mode", "enabled")
# auto: the gate moves champion to a better version; manual: training only sets challenger and a person promotes (diabetes-spark promote) (auto, manual)
dbutils.widgets.text("promotion_mode", "auto")
# Delta table recording every move of champion and challenger (path or catalog.schema.table; empty: model_alias_events under DIABETES_SPARK_HOME locally, in the session's catalog and schema on Databricks)
dbutils.widgets.text("alias_ledger", "")
# folder mlflow.spark copies models through: a /Volumes/<catalog>/<schema>/<volume>/... path on standard access and serverless compute (empty: $MLFLOW_DFS_TMP, else MLflow's default)
dbutils.widgets.text("dfs_tmpdir", "")
# telemetry SDK sending to Application Insights: opencensus, or opentelemetry (needs diabetes_spark[opentelemetry]; required for Entra ID, Authorization=AAD) (empty: $DIABETES_SPARK_TELEMETRY_BACKEND, else opencensus)
dbutils.widgets.text("telemetry_backend", "")

# COMMAND ----------

# The wheel to install as a notebook-scoped library ("pip" when empty: a no-op, the wheel is already there).
wheel = dbutils.widgets.get("wheel").strip().replace("dbfs:/", "/dbfs/", 1) or "pip"

# COMMAND ----------

# MAGIC %pip install --quiet $wheel

# COMMAND ----------

dbutils.library.restartPython()

# COMMAND ----------

import json

from diabetes_spark import jobs
from diabetes_spark.notebook import NotebookContext
from diabetes_spark.params import TrainParams
from diabetes_spark.telemetry import COMPONENT_TRAIN

# Secrets (ADLS Gen2 key, App Insights connection string) come from the secret scope; telemetry starts here.
context = NotebookContext.open(spark, dbutils, component=COMPONENT_TRAIN)
params = context.params(TrainParams)

# COMMAND ----------

try:
    summary = jobs.run_training(spark, params, telemetry=context.telemetry)
except Exception as error:
    # Log to Application Insights (with the stack trace), then fail the job run.
    context.telemetry.logger().exception("training failed: %s", error)
    context.close()
    raise
context.close()

# COMMAND ----------

dbutils.notebook.exit(json.dumps(summary, default=str))
