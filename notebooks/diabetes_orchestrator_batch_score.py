# Databricks notebook source
# MAGIC %md
# MAGIC # Diabetes progression: batch-scoring orchestrator
# MAGIC
# MAGIC Reads a scoring table, validates it (rejects with reasons), loads the registered model (version or alias),
# MAGIC scores it and replaces this batch's rows of the predictions Delta table, with lineage and drift monitoring.
# MAGIC
# MAGIC Run by the Databricks Job `diabetes-batch-scoring` (see `resources/`). Parameters (widgets; names and defaults
# MAGIC are those of `diabetes_spark.params.NotebookParams` and `ScoreParams`, and a test keeps them equal):
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
# MAGIC | `input` | `` | table or file to score (Delta path, abfss://, catalog.schema.table, .csv, .parquet) |
# MAGIC | `output` | `` | predictions Delta table (path, abfss:// URI or catalog.schema.table) |
# MAGIC | `model_name` | `diabetes_progression` (Databricks: `{catalog}.{schema}.diabetes_progression`) | registered model name |
# MAGIC | `model_version` | `` | model version to use (overrides model_alias) |
# MAGIC | `model_alias` | `champion` | model alias to use when no version is given |
# MAGIC | `batch_id` | `` | batch identifier (default: derived from the input, e.g. its Delta version) |
# MAGIC | `rejects` | `` | Delta table for rejected rows (default: <output>_rejects) |
# MAGIC | `experiment` | `diabetes-progression` (Databricks: `/Users/{user}/diabetes-progression`) | MLflow experiment for the scoring run |
# MAGIC | `max_reject_fraction` | `0.2` | fail before writing if more than this share of rows is rejected |
# MAGIC | `drift_threshold` | `0.2` | population stability index above which a feature is flagged as drifted |
# MAGIC | `shadow` | `false` | true: also score the batch with the challenger (when it is another version) into shadow_output (false, true) |
# MAGIC | `shadow_output` | `` | Delta table of the challenger's predictions with --shadow (default: <output>_shadow) |
# MAGIC | `shadow_tolerance` | `1.0` | --shadow: predictions differing by more than this count as different |
# MAGIC | `incremental` | `false` | true: score only the rows of a Delta input committed since the last incremental run into output, exactly once (Structured Streaming, availableNow, a checkpoint) (false, true) |
# MAGIC | `checkpoint_location` | `` | --incremental: the folder of its streaming checkpoint (default: <output>_checkpoint beside a Delta path; a /Volumes/... folder for a catalog table on Databricks) |
# MAGIC | `alias_ledger` | `` | Delta table recording every move of champion and challenger (path or catalog.schema.table; empty: model_alias_events under DIABETES_SPARK_HOME locally, in the session's catalog and schema on Databricks) |
# MAGIC | `dfs_tmpdir` | `` | folder mlflow.spark copies models through: a /Volumes/<catalog>/<schema>/<volume>/... path on standard access and serverless compute (empty: $MLFLOW_DFS_TMP, else MLflow's default) |
# MAGIC | `telemetry_backend` | `` | telemetry SDK sending to Application Insights: opencensus, or opentelemetry (needs diabetes_spark[opentelemetry]; required for Entra ID, Authorization=AAD) (empty: $DIABETES_SPARK_TELEMETRY_BACKEND, else opencensus) |
# MAGIC
# MAGIC Off Databricks: `diabetes-spark notebook notebooks/diabetes_orchestrator_batch_score.py --widget name=value ...`

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
# table or file to score (Delta path, abfss://, catalog.schema.table, .csv, .parquet)
dbutils.widgets.text("input", "")
# predictions Delta table (path, abfss:// URI or catalog.schema.table)
dbutils.widgets.text("output", "")
# registered model name
dbutils.widgets.text("model_name", f"{catalog}.{schema}.diabetes_progression" if workspace else "diabetes_progression")
# model version to use (overrides model_alias)
dbutils.widgets.text("model_version", "")
# model alias to use when no version is given
dbutils.widgets.text("model_alias", "champion")
# batch identifier (default: derived from the input, e.g. its Delta version)
dbutils.widgets.text("batch_id", "")
# Delta table for rejected rows (default: <output>_rejects)
dbutils.widgets.text("rejects", "")
# MLflow experiment for the scoring run
dbutils.widgets.text("experiment", f"/Users/{user}/diabetes-progression" if workspace else "diabetes-progression")
# fail before writing if more than this share of rows is rejected
dbutils.widgets.text("max_reject_fraction", "0.2")
# population stability index above which a feature is flagged as drifted
dbutils.widgets.text("drift_threshold", "0.2")
# true: also score the batch with the challenger (when it is another version) into shadow_output (false, true)
dbutils.widgets.text("shadow", "false")
# Delta table of the challenger's predictions with --shadow (default: <output>_shadow)
dbutils.widgets.text("shadow_output", "")
# --shadow: predictions differing by more than this count as different
dbutils.widgets.text("shadow_tolerance", "1.0")
# true: score only the rows of a Delta input committed since the last incremental run into output, exactly once (Structured Streaming, availableNow, a checkpoint) (false, true)
dbutils.widgets.text("incremental", "false")
# --incremental: the folder of its streaming checkpoint (default: <output>_checkpoint beside a Delta path; a /Volumes/... folder for a catalog table on Databricks)
dbutils.widgets.text("checkpoint_location", "")
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
from diabetes_spark.params import ScoreParams
from diabetes_spark.telemetry import COMPONENT_SCORE

# Secrets (ADLS Gen2 key, App Insights connection string) come from the secret scope; telemetry starts here.
context = NotebookContext.open(spark, dbutils, component=COMPONENT_SCORE)
params = context.params(ScoreParams)

# COMMAND ----------

try:
    summary = jobs.run_batch_scoring(spark, params, telemetry=context.telemetry)
except Exception as error:
    # Log to Application Insights (with the stack trace), then fail the job run.
    context.telemetry.logger().exception("batch scoring failed: %s", error)
    context.close()
    raise
context.close()

# COMMAND ----------

dbutils.notebook.exit(json.dumps(summary, default=str))
