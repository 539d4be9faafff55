"""The Databricks Asset Bundle, the notebooks and params.py agree, read offline from the raw YAML.

Every resource is checked with databricks-bundles' typed models (``Job``, ``MlflowExperiment``,
``RegisteredModel``, ``QualityMonitor``), which reject unknown fields and wrong types; the jobs' parameters with the
notebooks' widgets and ``diabetes_spark/params.py``; the timeouts with what the retries can use;
the schedules as Quartz cron. Resolving the bundle (variables, workspace paths, the wheel's upload)
is the Databricks CLI's work: ``databricks bundle validate -t <target>`` checks it against a workspace.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from databricks.bundles.experiments import MlflowExperiment
from databricks.bundles.jobs import Job
from databricks.bundles.quality_monitors import QualityMonitor
from databricks.bundles.registered_models import RegisteredModel

from diabetes_spark import __version__, cli, params, schemas, scoring
from diabetes_spark.deploy import secrets
from diabetes_spark.notebook import NOTEBOOKS
from diabetes_spark.redaction import SPARK_REDACTION_REGEX
from diabetes_spark.session import JOB_SPARK_CONF
from tests.quartz import check_quartz_cron

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
NOTEBOOK_PARAMS = {
    "diabetes_orchestrator_train.py": params.TrainParams,
    "diabetes_orchestrator_batch_score.py": params.ScoreParams,
}
#: A widget declaration and its local default (on Databricks some take a workspace default first).
WIDGET = re.compile(r'^dbutils\.widgets\.text\("([^"]+)", (?:f?"[^"]*" if workspace else )?"([^"]*)"\)', re.MULTILINE)
#: A bundle reference, ``${var.name}``, ``${resources.experiments.<key>.name}``, ...
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
#: The serverless variants: Python wheel tasks whose console script runs the notebook the wheel ships.
SERVERLESS_SCORING = "diabetes_batch_scoring_serverless"
SERVERLESS_TRAINING = "diabetes_retraining_serverless"
#: Serverless job -> its classic counterpart (same notebook, widgets and outputs).
SERVERLESS_OF = {SERVERLESS_SCORING: "diabetes_batch_scoring", SERVERLESS_TRAINING: "diabetes_retraining"}
#: The incremental scoring job: started by a table update, not a schedule.
INCREMENTAL_SCORING = "diabetes_batch_scoring_incremental"
#: The jobs on a job cluster (notebook tasks with the wheel as a task library).
CLASSIC_KEYS = {*SERVERLESS_OF.values(), INCREMENTAL_SCORING}
JOB_KEYS = {*CLASSIC_KEYS, *SERVERLESS_OF}
SCORING_KEYS = {"diabetes_batch_scoring", SERVERLESS_SCORING, INCREMENTAL_SCORING}
#: The scheduled jobs (the others start on a trigger).
SCHEDULED_KEYS = JOB_KEYS - {INCREMENTAL_SCORING}
#: Job -> the experiment (resources/experiments.yml) its runs go to.
JOB_EXPERIMENT = {
    "diabetes_retraining": "diabetes_training",
    SERVERLESS_TRAINING: "diabetes_training",
    "diabetes_batch_scoring": "diabetes_scoring",
    SERVERLESS_SCORING: "diabetes_scoring",
    INCREMENTAL_SCORING: "diabetes_scoring",
}
#: The registered model (resources/registered_models.yml) and the monitor of the predictions table.
MODEL_KEY = "diabetes_progression"
MONITOR_KEY = "diabetes_predictions"
WIDGET_FLAG = "--widget="
STORAGE_SECRETS = (
    "storage_account_secret",
    "storage_container_secret",
    "storage_key_secret",
    "storage_client_id_secret",
    "storage_client_secret_secret",
    "storage_tenant_id_secret",
)
UC = "${var.catalog}.${var.schema}"
VOLUME = "/Volumes/${var.catalog}/${var.schema}/${var.volume}"
#: Widgets whose job value is deployment-specific (job key -> value where it differs per job); every other
#: widget keeps its params.py default (`wheel` included: empty, the task library installs the wheel).
DEPLOYMENT_WIDGETS: dict[str, str | dict[str, str]] = {
    "secret_scope": "${var.secret_scope}",
    "telemetry_backend": "${var.telemetry_backend}",
    # Serverless: always empty, Unity Catalog only (it refuses Spark storage credentials).
    **{name: {job: "" if job in SERVERLESS_OF else f"${{var.{name}}}" for job in JOB_KEYS} for name in STORAGE_SECRETS},
    "databricks_job_id": "{{job.id}}",
    "databricks_run_id": "{{job.run_id}}",
    "training_data": "${var.training_data}",
    "input": {
        job: "${var.incremental_input}" if job == INCREMENTAL_SCORING else "${var.scoring_input}" for job in JOB_KEYS
    },
    "output": "${var.predictions}",
    "experiment": {job: f"${{resources.experiments.{key}.name}}" for job, key in JOB_EXPERIMENT.items()},
    # The bundle's registered model, by reference: development mode prefixes its name with "dev_<you>_".
    "model_name": f"{UC}.${{resources.registered_models.{MODEL_KEY}.name}}",
    "dfs_tmpdir": f"{VOLUME}/mlflow_tmp",
    "shadow": "${var.shadow_scoring}",
    "incremental": {job: "true" if job == INCREMENTAL_SCORING else "false" for job in JOB_KEYS},
    "checkpoint_location": {
        job: f"{VOLUME}/checkpoints/diabetes_predictions" if job == INCREMENTAL_SCORING else "" for job in JOB_KEYS
    },
    "alias_ledger": "${var.alias_ledger}",
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """databricks.yml as written."""
    return yaml.safe_load((ROOT / "databricks.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def raw() -> dict[str, dict[str, dict[str, Any]]]:
    """resource type -> key -> mapping, read straight from resources/*.yml (no substitution)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(RESOURCES.glob("*.yml")):
        for kind, specs in yaml.safe_load(path.read_text(encoding="utf-8"))["resources"].items():
            twice = set(specs) & set(out.get(kind, {}))
            assert not twice, f"{kind} {twice} defined twice (again in {path.name})"
            out.setdefault(kind, {}).update(specs)
    return out


def _tasks(raw: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """(job key, task) for every task of the bundle."""
    return [(key, task) for key, job in raw["jobs"].items() for task in job["tasks"]]


def _widgets(task: dict[str, Any]) -> dict[str, str]:
    """The widgets a task sets: a notebook task's base_parameters, or a wheel task's --widget=NAME=VALUE."""
    if "notebook_task" in task:
        return task["notebook_task"]["base_parameters"]
    flags = [p[len(WIDGET_FLAG) :] for p in task["python_wheel_task"]["parameters"] if p.startswith(WIDGET_FLAG)]
    widgets = params.parse_assignments(flags, flag="--widget")
    assert len(widgets) == len(flags), f"a widget set twice: {flags}"
    return widgets


def _notebook(task: dict[str, Any]) -> Path:
    """The notebook a task runs: its notebook_path (relative to resources/), or the wheel's shipped one it names."""
    if "notebook_task" in task:
        return (RESOURCES / task["notebook_task"]["notebook_path"]).resolve()
    command, name = task["python_wheel_task"]["parameters"][:2]
    assert command == "notebook", command
    return ROOT / "notebooks" / NOTEBOOKS[name]  # setup.py ships notebooks/ as diabetes_spark._notebooks


def _declared_widgets(notebook: Path) -> dict[str, str]:
    return dict(WIDGET.findall(notebook.read_text(encoding="utf-8")))


def _retry_budget(task: dict[str, Any]) -> float:
    """Seconds a task may use with all its retries: every attempt times out, with the minimum wait between."""
    retries = task.get("max_retries", 0)
    return task["timeout_seconds"] * (retries + 1) + retries * task.get("min_retry_interval_millis", 0) / 1000


def _references(value: Any) -> Iterator[str]:
    """The name inside every ``${...}`` in ``value``, recursively."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, str):
        yield from REFERENCE.findall(value)


def _target_variables(config: dict[str, Any], target: str) -> dict[str, Any]:
    return config["targets"][target].get("variables") or {}


def test_the_bundle_defines_its_resources_in_resources(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    assert config["include"] == ["resources/*.yml"]
    assert "resources" not in config, "resources belong in resources/*.yml, where these tests read them"
    for target in config["targets"].values():
        assert "resources" not in target, "a target's resource override would escape these tests"
    assert set(raw["jobs"]) == JOB_KEYS
    assert set(raw["experiments"]) == set(JOB_EXPERIMENT.values())
    assert set(raw["registered_models"]) == {MODEL_KEY}
    assert set(raw["quality_monitors"]) == {MONITOR_KEY}
    assert set(config["targets"]) == {"dev", "prod"}
    assert config["targets"]["dev"]["mode"] == "development"
    assert config["targets"]["prod"]["mode"] == "production"


#: Resource type -> the databricks-bundles model that checks it.
MODELS: dict[str, Any] = {
    "jobs": Job,
    "experiments": MlflowExperiment,
    "registered_models": RegisteredModel,
    "quality_monitors": QualityMonitor,
}


def test_every_raw_resource_passes_the_databricks_bundles_models(
    raw: dict[str, dict[str, dict[str, Any]]],
) -> None:
    assert set(raw) == set(MODELS), "a resource type the tests do not check"
    for kind, specs in raw.items():
        for key, spec in specs.items():
            assert MODELS[kind].from_dict(copy.deepcopy(spec)).as_dict() == spec, key  # nothing dropped or changed
    for key, spec in raw["experiments"].items():
        experiment = MlflowExperiment.from_dict(copy.deepcopy(spec))
        assert experiment.artifact_location is None, f"{key}: the tracking server chooses where artifacts go"


@pytest.mark.parametrize(
    ("kind", "needs", "change", "message"),
    [
        ("jobs", None, lambda s: s.update(max_concurent_runs=1), "Unexpected field 'max_concurent_runs' for class Job"),
        ("jobs", None, lambda s: s["tasks"][0].update(max_retires=2), "Unexpected field 'max_retires' for class Task"),
        ("jobs", None, lambda s: s.update(timeout_seconds="4h"), "invalid literal for int()"),
        ("jobs", None, lambda s: s["tasks"][0].update(libraries="../dist/*.whl"), "Unexpected type"),
        ("jobs", None, lambda s: s["queue"].update(enabled="sometimes"), "Unexpected type"),
        (
            "jobs",
            "schedule",
            lambda s: s["schedule"].update(pause_status="PAUSD"),
            "'PAUSD' is not a valid PauseStatus",
        ),
        (
            "jobs",
            "trigger",
            lambda s: s["trigger"]["table_update"].update(condition="ANY_CHANGED"),
            "'ANY_CHANGED' is not a valid Condition",
        ),
        (
            "jobs",
            "trigger",
            lambda s: s["trigger"]["table_update"].update(table_name="t"),
            "Unexpected field 'table_name' for class TableUpdateTriggerConfiguration",
        ),
        (
            "jobs",
            "job_clusters",
            lambda s: s["job_clusters"][0]["new_cluster"].update(data_security_mode="SINGLE"),
            "DataSecurityMode",
        ),
        (
            "jobs",
            "job_clusters",
            lambda s: s["tasks"][0]["notebook_task"].update(base_paramaters={}),
            "Unexpected field 'base_paramaters' for class NotebookTask",
        ),
        (
            "jobs",
            "environments",
            lambda s: s["environments"][0]["spec"].update(dependency=["../dist/*.whl"]),
            "Unexpected field 'dependency' for class Environment",
        ),
        (
            "jobs",
            "environments",
            lambda s: s.update(performance_target="FAST"),
            "'FAST' is not a valid PerformanceTarget",
        ),
        (
            "jobs",
            "environments",
            lambda s: s["tasks"][0]["python_wheel_task"].update(entry_piont="x"),
            "Unexpected field 'entry_piont' for class PythonWheelTask",
        ),
        ("experiments", None, lambda s: s.update(description="x"), "Unexpected field 'description' for class"),
        ("experiments", None, lambda s: s.update(tags={"project": "x"}), "Unexpected type"),
        ("registered_models", None, lambda s: s.update(schema="x"), "Unexpected field 'schema' for class"),
        (
            "registered_models",
            None,
            lambda s: s["grants"][0].update(privileges=["EXECUT"]),
            "'EXECUT' is not a valid Privilege",
        ),
        (
            "registered_models",
            None,
            lambda s: s["grants"][0].update(principals=["x"]),
            "Unexpected field 'principals' for class PrivilegeAssignment",
        ),
        (
            "quality_monitors",
            None,
            lambda s: s["inference_log"].update(problem_type="REGRESSION"),
            "'REGRESSION' is not a valid MonitorInferenceLogProblemType",
        ),
        (
            "quality_monitors",
            None,
            lambda s: s["inference_log"].update(model_col="model_version"),
            "Unexpected field 'model_col' for class MonitorInferenceLog",
        ),
        (
            "quality_monitors",
            None,
            lambda s: s["schedule"].update(cron="0 0 10 * * ?"),
            "Unexpected field 'cron' for class MonitorCronSchedule",
        ),
    ],
)
def test_an_unknown_field_or_a_wrong_type_fails_the_typed_models(
    raw: dict[str, dict[str, dict[str, Any]]], kind: str, needs: str | None, change: Any, message: str
) -> None:
    model = MODELS[kind]
    specs = {key: spec for key, spec in raw[kind].items() if needs is None or needs in spec}
    assert specs, f"no {kind[:-1]} has {needs}"
    for spec in specs.values():
        broken = copy.deepcopy(spec)
        change(broken)
        with pytest.raises(ValueError, match=re.escape(message)):
            model.from_dict(broken)


def test_every_reference_names_a_declared_variable_or_resource(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    known = {"bundle.name", "bundle.target", "workspace.current_user.userName", "workspace.root_path"}
    known |= {f"var.{name}" for name in config["variables"]}
    named = {f"resources.{kind}.{key}.name" for kind in ("experiments", "registered_models") for key in raw[kind]}
    used = set(_references(config)) | set(_references(raw))
    assert used - known - named == set(), "a reference to something the bundle does not declare"
    assert named <= used, "a declared experiment or model no job names"


def test_every_task_runs_a_notebook_of_the_repository(raw: dict[str, dict[str, dict[str, Any]]]) -> None:
    for key, task in _tasks(raw):
        local = _notebook(task)
        assert local.is_file(), f"{key}: {local} does not exist"
        assert local.parent == ROOT / "notebooks"
        if "notebook_task" in task:
            assert task["notebook_task"]["source"] == "WORKSPACE", key


def test_base_parameters_equal_the_notebook_widgets_and_params_py(raw: dict[str, dict[str, dict[str, Any]]]) -> None:
    seen = set()
    for key, task in _tasks(raw):
        notebook = _notebook(task)
        job_params = NOTEBOOK_PARAMS[notebook.name]
        base = _widgets(task)
        declared = _declared_widgets(notebook)
        expected = params.notebook_widgets(job_params)
        # The serverless environment installs the wheel: no `wheel` widget for the notebook's %pip cell.
        omitted = {"wheel"} if key in SERVERLESS_OF else set()
        assert set(base) == set(declared) - omitted == set(expected) - omitted, key
        assert "wheel" in declared
        assert declared == expected, f"{notebook.name}: widget defaults differ from params.py"
        names = [name for name, *_ in params.describe(params.NotebookParams) + params.describe(job_params)]
        assert list(declared) == names, f"{notebook.name}: widgets not declared in params.py order"
        seen.add(notebook.name)
    assert seen == set(NOTEBOOK_PARAMS)


def test_values_that_are_not_deployment_specific_are_the_params_defaults(
    raw: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for key, task in _tasks(raw):
        defaults = params.notebook_widgets(NOTEBOOK_PARAMS[_notebook(task).name])
        for name, value in _widgets(task).items():
            expected = DEPLOYMENT_WIDGETS.get(name, defaults[name])
            expected = expected[key] if isinstance(expected, dict) else expected
            assert isinstance(value, str), f"{key}.{name}: {value!r} is not a string"
            assert value == expected, f"{key}.{name}: {value!r}, expected {expected!r}"


def test_the_wheel_is_the_builds_output_attached_by_glob_not_by_version(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    (artifact,) = config["artifacts"].values()
    assert artifact["type"] == "whl"
    assert artifact["build"].split()[:4] == ["python", "-m", "build", "--wheel"]
    assert artifact["build"].split()[4:6] == ["--outdir", "dist"]
    # The CLI uploads the libraries it attaches: nothing to sync from dist/, no version anywhere in the YAML.
    assert "dist/*.whl" not in (config.get("sync") or {}).get("include", [])
    assert "wheel_path" not in config["variables"]
    for path in [ROOT / "databricks.yml", *sorted(RESOURCES.glob("*.yml"))]:
        assert __version__ not in path.read_text(encoding="utf-8"), path
    for key, task in _tasks(raw):
        if key in SERVERLESS_OF:  # the environment installs it (test_the_serverless_jobs_install_...)
            continue
        assert task["libraries"] == [{"whl": "../dist/*.whl"}], key
        assert task["notebook_task"]["base_parameters"]["wheel"] == "", key


@pytest.mark.parametrize("key", sorted(SERVERLESS_OF))
def test_a_serverless_job_has_no_cluster_or_library_and_its_task_names_a_declared_environment(
    raw: dict[str, dict[str, dict[str, Any]]], key: str
) -> None:
    spec = raw["jobs"][key]
    assert "job_clusters" not in spec
    declared = [e["environment_key"] for e in spec["environments"]]
    assert declared == ["default"]
    for task in spec["tasks"]:
        assert not {"job_cluster_key", "existing_cluster_id", "new_cluster", "libraries"} & set(task), task
        assert task["environment_key"] in declared
        assert set(task) & {"notebook_task", "python_wheel_task"} == {"python_wheel_task"}, (
            "a notebook task cannot take an environment_key"
        )
    assert spec["performance_target"] == "STANDARD"
    for classic in CLASSIC_KEYS:  # and the classic jobs declare no environment
        assert "environments" not in raw["jobs"][classic], classic


@pytest.mark.parametrize("key", sorted(SERVERLESS_OF))
def test_a_serverless_job_installs_the_built_wheel_from_its_environment(
    raw: dict[str, dict[str, dict[str, Any]]], key: str
) -> None:
    (environment,) = raw["jobs"][key]["environments"]
    assert environment["spec"]["dependencies"] == ["../dist/*.whl"], "the same glob as the classic task libraries"
    version = environment["spec"]["environment_version"]
    # Spark ML and mlflow.spark on serverless need environment 4; 5 carries Databricks Connect 18 (Spark 4.1),
    # the line of the pyspark pin, and MLflow 3.8.1.
    assert version == "5", version
    (task,) = raw["jobs"][key]["tasks"]
    wheel_task = task["python_wheel_task"]
    assert wheel_task["package_name"] == "diabetes_spark"
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts[wheel_task["entry_point"]] == "diabetes_spark.cli:entry"  # raises a failing exit code


@pytest.mark.parametrize(
    ("key", "command", "notebook"),
    [
        (SERVERLESS_SCORING, "score", "diabetes_orchestrator_batch_score.py"),
        (SERVERLESS_TRAINING, "train", "diabetes_orchestrator_train.py"),
    ],
)
def test_serverless_parameters_are_the_notebook_subcommand_running_a_shipped_notebook(
    raw: dict[str, dict[str, dict[str, Any]]], key: str, command: str, notebook: str
) -> None:
    (task,) = raw["jobs"][key]["tasks"]
    parameters = task["python_wheel_task"]["parameters"]
    args = cli.build_parser().parse_args(parameters)
    assert (args.command, args.path) == ("notebook", command)
    assert NOTEBOOKS[args.path] == notebook
    assert all(p.startswith(WIDGET_FLAG) for p in parameters[2:]), "nothing but widgets after the notebook"
    assert params.parse_assignments(args.widget, flag="--widget") == _widgets(task)


@pytest.mark.parametrize("key", sorted(SERVERLESS_OF))
def test_serverless_widgets_equal_the_classic_parameters_minus_wheel(
    raw: dict[str, dict[str, dict[str, Any]]], key: str
) -> None:
    classic = raw["jobs"][SERVERLESS_OF[key]]["tasks"][0]["notebook_task"]["base_parameters"]
    serverless = _widgets(raw["jobs"][key]["tasks"][0])
    expected = {k: "" if k in STORAGE_SECRETS else v for k, v in classic.items() if k != "wheel"}
    assert serverless == expected
    assert list(serverless) == list(expected), "in the notebook's (and params.py's) order"


@pytest.mark.parametrize("key", sorted(SERVERLESS_OF))
def test_a_serverless_job_runs_what_its_classic_counterpart_does(
    raw: dict[str, dict[str, dict[str, Any]]], key: str
) -> None:
    """Same retries, timeouts, schedule (but its pause switch), queue and e-mail: only the compute differs."""
    compute = {"job_clusters", "environments", "performance_target", "name", "description", "tags"}
    serverless, classic = raw["jobs"][key], raw["jobs"][SERVERLESS_OF[key]]
    assert {k: v for k, v in serverless.items() if k not in compute | {"tasks", "schedule"}} == {
        k: v for k, v in classic.items() if k not in compute | {"tasks", "schedule"}
    }
    assert {**serverless["schedule"], "pause_status": None} == {**classic["schedule"], "pause_status": None}
    (task,), (classic_task,) = serverless["tasks"], classic["tasks"]
    retries = ("task_key", "timeout_seconds", "max_retries", "min_retry_interval_millis", "retry_on_timeout")
    assert {k: task[k] for k in retries} == {k: classic_task[k] for k in retries}
    assert serverless["tags"] == {**classic["tags"], "compute": "serverless"}


def test_one_job_of_each_pair_is_scheduled_and_a_variable_each_switches_them(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    pauses = {key: spec["schedule"]["pause_status"] for key, spec in raw["jobs"].items() if key in SCHEDULED_KEYS}
    switches = {
        "diabetes_retraining": "retraining_pause_status",
        SERVERLESS_TRAINING: "serverless_retraining_pause_status",
        "diabetes_batch_scoring": "batch_scoring_pause_status",
        SERVERLESS_SCORING: "serverless_scoring_pause_status",
    }
    assert pauses == {key: f"${{var.{name}}}" for key, name in switches.items()}
    variables = config["variables"]
    for key, name in switches.items():
        # Both jobs of a pair write the same model or table: the serverless one stays paused unless a team switches.
        expected = "PAUSED" if key in SERVERLESS_OF else "${var.schedule_pause_status}"
        assert variables[name]["default"] == expected, name
    assert {t: _target_variables(config, t)["schedule_pause_status"] for t in config["targets"]} == {
        "dev": "PAUSED",
        "prod": "UNPAUSED",
    }
    for target in config["targets"]:
        assert not set(switches.values()) & set(_target_variables(config, target)), target


def test_job_clusters_are_single_node_on_an_ml_lts_runtime(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    spark_version = config["variables"]["spark_version"]["default"]
    assert re.fullmatch(r"\d+(\.\d+)?\.x-cpu-ml-scala2\.13", spark_version), spark_version
    assert spark_version.startswith("18."), "the local pyspark pin is Spark 4.1 = Databricks Runtime 18"
    for target in config["targets"]:
        assert "spark_version" not in _target_variables(config, target), target
    for key in CLASSIC_KEYS:
        spec = raw["jobs"][key]
        (cluster,) = spec["job_clusters"]
        assert {t["job_cluster_key"] for t in spec["tasks"]} == {cluster["job_cluster_key"]}
        new = cluster["new_cluster"]
        assert new["spark_version"] == "${var.spark_version}", key
        assert new["num_workers"] == 0
        assert new["data_security_mode"] == "SINGLE_USER"
        assert new["spark_conf"] == {
            "spark.databricks.cluster.profile": "singleNode",
            "spark.master": "local[*, 4]",
            "spark.redaction.regex": SPARK_REDACTION_REGEX,
            **JOB_SPARK_CONF,
        }, key
        assert new["custom_tags"] == {"ResourceClass": "SingleNode"}


def test_every_job_timeout_covers_what_its_retries_can_use(raw: dict[str, dict[str, dict[str, Any]]]) -> None:
    for key, job in raw["jobs"].items():
        budget = sum(_retry_budget(task) for task in job["tasks"])
        assert job["timeout_seconds"] >= budget, (
            f"{key}: timeout_seconds {job['timeout_seconds']} < {budget:g} s that its tasks' attempts and retry "
            "intervals may take: the job would be cut off before its last retry"
        )


def test_schedules_run_limits_and_retries(raw: dict[str, dict[str, dict[str, Any]]]) -> None:
    jobs = raw["jobs"]
    for key, spec in jobs.items():
        if key in SCHEDULED_KEYS:
            check_quartz_cron(spec["schedule"]["quartz_cron_expression"])
            assert ZoneInfo(spec["schedule"]["timezone_id"])
        assert spec["max_concurrent_runs"] == 1
        assert spec["queue"] == {"enabled": True}
        (task,) = spec["tasks"]
        assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] >= 60_000, key
    # Weekly retraining (one day of the week), daily scoring (every day).
    train = jobs["diabetes_retraining"]["schedule"]["quartz_cron_expression"].split()
    score = jobs["diabetes_batch_scoring"]["schedule"]["quartz_cron_expression"].split()
    assert (train[3], train[4]) == ("?", "*") and re.fullmatch(r"[1-7]|SUN|MON|TUE|WED|THU|FRI|SAT", train[5])
    assert (score[3], score[4], score[5]) == ("*", "*", "?")
    for key in SCORING_KEYS:  # the write replaces its batch
        assert jobs[key]["tasks"][0]["retry_on_timeout"] is True, key


def test_failure_email_is_a_variable_without_a_default_in_prod(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for key, spec in raw["jobs"].items():
        assert spec["email_notifications"] == {"on_failure": ["${var.alert_email}"]}, key
    assert "default" not in config["variables"]["alert_email"]
    assert _target_variables(config, "dev")["alert_email"] == "${workspace.current_user.userName}"
    assert "alert_email" not in _target_variables(config, "prod"), "prod fails without --var alert_email"


def test_prod_is_run_and_managed_by_a_principal_from_a_fixed_root(config: dict[str, Any]) -> None:
    prod = config["targets"]["prod"]
    assert prod["run_as"] == {"service_principal_name": "${var.service_principal}"}
    root = prod["workspace"]["root_path"]
    # The principal's folder: no person's home, and not /Workspace/Shared, which every user may write.
    assert root.startswith("/Workspace/Users/${var.service_principal}/"), root
    assert "current_user" not in root, "every deployer must update the same copy"
    assert root.endswith("/${bundle.name}/${bundle.target}"), root
    # Bundle-level levels are CAN_MANAGE, CAN_RUN and CAN_VIEW (the CLI maps CAN_RUN to a job's CAN_MANAGE_RUN).
    levels = {next(v for k, v in p.items() if k != "level"): p["level"] for p in prod["permissions"]}
    assert set(levels.values()) <= {"CAN_MANAGE", "CAN_RUN", "CAN_VIEW"}, levels
    assert levels == {
        "${var.service_principal}": "CAN_MANAGE",
        "${var.operators_group}": "CAN_RUN",
        "${var.viewers_group}": "CAN_VIEW",
    }
    assert all("group_name" in p for p in prod["permissions"] if p["level"] != "CAN_MANAGE")
    for name in ("service_principal", "operators_group"):  # no default: prod fails without them
        assert "default" not in config["variables"][name], name
        assert name not in _target_variables(config, "prod"), name
    assert "run_as" not in config["targets"]["dev"] and "permissions" not in config["targets"]["dev"]
    assert "permissions" not in config and "run_as" not in config, "bundle-wide, they would reach dev too"


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 3 ? * SUN",
        "0 0 5 * * ?",
        "0 15 10 ? * MON-FRI",
        "0 0/5 14,18 * * ?",
        "0 0 12 L * ?",
        "0 0 12 15W * ?",
        "0 0 12 ? * 6#3",
        "0 0 12 ? * 6L",
        "0 0 12 1 JAN,JUL ? 2030",
        "0 30 2 ? * 1-5/2",
    ],
)
def test_quartz_cron_accepts_valid_expressions(expression: str) -> None:
    check_quartz_cron(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * * 0", "6 or 7 fields"),  # Unix cron, five fields
        ("0 0 3 * * *", "exactly one of day-of-month and day-of-week"),
        ("0 0 3 ? * ?", "exactly one of day-of-month and day-of-week"),
        ("60 0 3 ? * SUN", "bad seconds field"),
        ("0 0 24 * * ?", "bad hours field"),
        ("0 0 3 32 * ?", "bad day-of-month field"),
        ("0 0 3 ? 13 MON", "bad month field"),
        ("0 0 3 ? * 8", "bad day-of-week field"),
        ("0 0 3 ? * MON#6", "bad day-of-week field"),
        ("0 0/0 3 * * ?", "bad minutes field"),
        ("0 0 3 * * ? 1969", "bad year field"),
        ("0 0 3 ? * FUNDAY", "bad day-of-week field"),
    ],
)
def test_quartz_cron_rejects_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_quartz_cron(expression)


def test_the_deployment_guide_names_every_variable_job_experiment_and_secret_variable(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in [*config["variables"], *(key for specs in raw.values() for key in specs)]:
        assert f"`{name}`" in guide, f"docs/deploy.md does not mention {name}"
    for env, _ in secrets.SECRET_ENVIRONMENT.values():
        assert env in guide
    for command in (
        "databricks bundle deploy -t dev",
        "diabetes-spark setup-secrets",
        "databricks bundle validate -t prod -o json",
    ):
        assert command in guide, command
    for privilege in ("USE CATALOG", "USE SCHEMA", "CREATE TABLE", "SELECT", "MODIFY", "READ VOLUME", "WRITE VOLUME"):
        assert privilege in guide, privilege
    assert "CREATE MODEL" in guide and "EXECUTE" in guide


def test_the_yaml_has_no_duplicate_keys() -> None:
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(k) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {duplicates} at line {node.start_mark.line + 1}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in [ROOT / "databricks.yml", *sorted(RESOURCES.glob("*.yml"))]:
        yaml.load(path.read_text(encoding="utf-8"), Loader=Strict)


def test_secret_key_names_match_params_and_setup_secrets_defaults(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    flags = vars(parser.parse_args(["--scope", "s"]))
    defaults = params.widget_defaults(params.NotebookParams)
    assert set(secrets.SECRET_ENVIRONMENT) == {"appinsights_secret", *STORAGE_SECRETS}
    for field in secrets.SECRET_ENVIRONMENT:
        assert flags[field] == defaults[field], f"setup-secrets --{field.replace('_', '-')}"
    for key, task in _tasks(raw):
        base = _widgets(task)
        assert base["appinsights_secret"] == defaults["appinsights_secret"], key
        for field in STORAGE_SECRETS:  # a variable each, so a team picks OAuth or the key with --var
            assert base[field] == ("" if key in SERVERLESS_OF else f"${{var.{field}}}"), f"{key}.{field}"
    assert config["variables"]["secret_scope"]["default"] == defaults["secret_scope"]


def test_the_default_storage_route_is_unity_catalog(config: dict[str, Any]) -> None:
    for field in STORAGE_SECRETS:
        assert config["variables"][field]["default"] == "", f"{field}: the bundle's default is no Spark credential"
        assert config["variables"][field]["description"], field
        for target in config["targets"]:
            assert field not in _target_variables(config, target), f"{target} overrides {field}"


def test_model_and_table_names_are_built_from_the_catalog_and_schema(config: dict[str, Any]) -> None:
    variables = config["variables"]
    assert variables["training_data"]["default"] == f"{UC}.diabetes_raw"
    assert variables["scoring_input"]["default"] == f"{UC}.diabetes_scoring"
    assert variables["predictions"]["default"] == f"{UC}.diabetes_predictions"
    dev = _target_variables(config, "dev")
    assert dev["training_data"] == f"{VOLUME}/diabetes.csv"
    assert dev["scoring_input"] == f"{VOLUME}/scoring_batch.csv"
    assert dev["schema"] != variables["schema"]["default"], "dev has its own schema"
    prod = _target_variables(config, "prod")
    assert not {"catalog", "schema", "training_data", "scoring_input", "predictions"} & set(prod), "prod: the defaults"


def test_each_job_logs_to_its_own_declared_experiment(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    names = {key: spec["name"] for key, spec in raw["experiments"].items()}
    assert len(set(names.values())) == 2, "training and scoring runs go to different experiments"
    assert all(name.startswith("${var.experiment_folder}/") for name in names.values()), names
    for key, task in _tasks(raw):
        assert _widgets(task)["experiment"] == f"${{resources.experiments.{JOB_EXPERIMENT[key]}.name}}", key
    for serverless, classic in SERVERLESS_OF.items():
        assert JOB_EXPERIMENT[serverless] == JOB_EXPERIMENT[classic], "both jobs of a pair log to one experiment"
    assert config["variables"]["experiment_folder"]["default"] == "/Users/${workspace.current_user.userName}"
    assert "experiment_folder" not in _target_variables(config, "dev")


def test_prod_experiments_are_in_the_bundles_own_folder_not_shared(config: dict[str, Any]) -> None:
    """In /Shared every workspace user may delete the training run, and with it scoring's drift profile."""
    prod = config["targets"]["prod"]
    folder = _target_variables(config, "prod")["experiment_folder"]
    assert not folder.lower().lstrip("/").removeprefix("workspace/").startswith("shared"), folder
    # root_path as MLflow names experiments (no /Workspace prefix): the folder whose permissions the bundle sets.
    assert "/Workspace" + folder == prod["workspace"]["root_path"], folder
    assert "current_user" not in folder, "one folder, whoever deploys"
    levels = {p["level"] for p in prod["permissions"]}
    assert {"CAN_MANAGE", "CAN_RUN", "CAN_VIEW"} == levels, "the folder is managed, run and read by named groups"


def test_prod_scores_each_batch_with_the_challenger_in_shadow(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    assert _target_variables(config, "prod")["shadow_scoring"] == "true"
    assert config["variables"]["shadow_scoring"]["default"] == "false"
    assert "shadow_scoring" not in _target_variables(config, "dev")
    scoring = [key for key, task in _tasks(raw) if _notebook(task).name == "diabetes_orchestrator_batch_score.py"]
    assert len(scoring) == 3, scoring  # classic, serverless and incremental
    for key, task in _tasks(raw):
        if key in scoring:
            assert _widgets(task)["shadow"] == "${var.shadow_scoring}", key


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_every_deploy_uploads_a_new_wheel_and_old_clis_refuse_the_bundle(config: dict[str, Any]) -> None:
    """Serverless environments cache dependencies by path: an unchanged wheel name would keep the old code."""
    (artifact,) = config["artifacts"].values()
    assert artifact["dynamic_version"] is True, "databricks/cli #1621: a redeploy could run the previous wheel"
    constraint = config["bundle"]["databricks_cli_version"]
    match = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)", constraint)
    assert match, f"{constraint!r}: a lower bound the CLI checks before anything else"
    # environment_version needs 0.252 (performance_target 0.241, dynamic_version 0.245).
    assert _version(match.group(1)) >= (0, 252, 0), constraint


def test_the_documented_cli_minimum_is_the_bundles(config: dict[str, Any]) -> None:
    minimum = re.fullmatch(r">=\s*(\d+\.\d+)\.\d+", config["bundle"]["databricks_cli_version"])
    assert minimum
    for path in (ROOT / "databricks.yml", ROOT / "docs" / "deploy.md"):
        text = path.read_text(encoding="utf-8")
        assert f"CLI {minimum.group(1)} or later" in text or f"CLI **{minimum.group(1)} or later**" in text, path
        assert "0.239 or later" not in text, f"{path.name}: the old minimum"
        assert not re.search(r"(?<!no longer )empt(y|ies) `?dist/", text), (
            f"{path.name}: since 0.256 deploy keeps dist/"
        )


def test_scoring_leaves_batch_id_to_the_library_and_keeps_the_run_id_as_lineage(
    raw: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """A Run now, repair or backfill over the same input replaces its batch: no job-run batch id."""
    default = params.notebook_widgets(params.ScoreParams)["batch_id"]
    assert default == "", "the library derives the batch id from the input when it is empty"
    for key in SCORING_KEYS:
        (task,) = raw["jobs"][key]["tasks"]
        widgets = _widgets(task)
        assert widgets["batch_id"] == "", f"{key}: {widgets['batch_id']!r}"
        assert widgets["databricks_run_id"] == "{{job.run_id}}", key
    for key, task in _tasks(raw):
        assert "{{job.run_id}}" not in {v for k, v in _widgets(task).items() if k != "databricks_run_id"}, key


def test_the_registered_model_is_named_from_the_catalog_and_schema_and_granted(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    model = raw["registered_models"][MODEL_KEY]
    assert (model["catalog_name"], model["schema_name"], model["name"]) == (
        "${var.catalog}",
        "${var.schema}",
        "diabetes_progression",
    )
    assert "owner" not in model, "the deployer owns it: the run-as identity, the one that may move its aliases"
    assert model["grants"] == [{"principal": "${var.operators_group}", "privileges": ["EXECUTE"]}]
    # Every target gives the grant's principal a value (dev: you; prod: no default, the deploy fails without it).
    assert _target_variables(config, "dev")["operators_group"] == "${workspace.current_user.userName}"
    for key, task in _tasks(raw):
        assert _widgets(task)["model_name"] == f"{UC}.${{resources.registered_models.{MODEL_KEY}.name}}", key


def test_the_predictions_monitor_profiles_the_lineage_columns_scoring_writes(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    monitor = raw["quality_monitors"][MONITOR_KEY]
    assert monitor["table_name"] == "${var.predictions}"
    assert monitor["output_schema_name"] == UC
    assert monitor["assets_dir"].startswith("${workspace.root_path}/"), "the bundle's folder and permissions"
    log = monitor["inference_log"]
    assert log["problem_type"] == "PROBLEM_TYPE_REGRESSION"
    columns = {f["name"]: f["type"] for f in json.loads((ROOT / "schemas" / "predictions.json").read_text())["fields"]}
    assert columns[log["prediction_col"]] == "double", "a regression monitor needs a numeric prediction"
    assert columns[log["timestamp_col"]] == "timestamp"
    assert columns[log["model_id_col"]] == "string"
    assert (log["prediction_col"], log["timestamp_col"], log["model_id_col"]) == (
        schemas.PREDICTION,
        "scored_at",
        "model_version",
    )
    assert {log["timestamp_col"], log["model_id_col"]} <= set(scoring.LINEAGE_COLUMNS)
    assert log["granularities"] == ["1 day"], "one window per daily batch"


def test_the_monitor_refreshes_after_the_longest_scoring_run(raw: dict[str, dict[str, dict[str, Any]]]) -> None:
    schedule = raw["quality_monitors"][MONITOR_KEY]["schedule"]
    check_quartz_cron(schedule["quartz_cron_expression"])
    seconds, minutes, hours, day, month, weekday = schedule["quartz_cron_expression"].split()
    assert (day, month, weekday) == ("*", "*", "?"), "daily, as scoring"
    refresh = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    for key in SCORING_KEYS & SCHEDULED_KEYS:
        job = raw["jobs"][key]
        assert job["schedule"]["timezone_id"] == schedule["timezone_id"], key
        s, m, h = (int(x) for x in job["schedule"]["quartz_cron_expression"].split()[:3])
        assert refresh >= h * 3600 + m * 60 + s + job["timeout_seconds"], f"{key} may still be writing"
        assert refresh < 24 * 3600


#: The DDL docs/deploy.md gives for the predictions table, which the monitor needs before the first deploy.
DDL = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<name>\S+) \((?P<columns>.*?)\)\s*USING DELTA\s*PARTITIONED BY \((?P<part>[^)]*)\)"
    r"\s*TBLPROPERTIES \((?P<props>[^)]*)\);",
    re.DOTALL,
)


def test_the_guides_predictions_table_is_the_one_scoring_creates() -> None:
    """Pre-created for the monitor, it must be what the first scoring run would have created."""
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    found = list(DDL.finditer(guide))
    assert [m.group("name") for m in found] == [
        "main.diabetes_dev.diabetes_predictions",
        "main.diabetes.diabetes_predictions",
    ]
    fields = json.loads((ROOT / "schemas" / "predictions.json").read_text())["fields"]
    expected = [(f["name"], f["type"].upper()) for f in fields]
    for match in found:
        columns = [tuple(c.split()[:2]) for c in match.group("columns").split(",")]
        assert columns == expected, match.group("name")
        assert tuple(c.strip() for c in match.group("part").split(",")) == scoring.BATCH_PARTITIONING
        props = dict(re.findall(r"'([^']+)'\s*=\s*'([^']*)'", match.group("props")))
        assert props == scoring.PREDICTIONS_TABLE_PROPERTIES


def test_the_incremental_job_starts_when_its_unity_catalog_input_changes(
    config: dict[str, Any], raw: dict[str, dict[str, dict[str, Any]]]
) -> None:
    """It is the scheduled classic job with a table_update trigger instead of a schedule, incremental on and its
    checkpoint in the volume; paused in every target, since it writes the scheduled jobs' predictions table."""
    job, classic = raw["jobs"][INCREMENTAL_SCORING], raw["jobs"]["diabetes_batch_scoring"]
    assert "schedule" not in job
    trigger = job["trigger"]
    assert trigger["pause_status"] == "${var.incremental_scoring_pause_status}"
    assert trigger["table_update"]["table_names"] == ["${var.incremental_input}"]
    assert trigger["table_update"]["wait_after_last_change_seconds"] >= 60
    assert config["variables"]["incremental_input"]["default"] == f"{UC}.diabetes_scoring", "a table, not a file"
    assert config["variables"]["incremental_scoring_pause_status"]["default"] == "PAUSED"
    for target in config["targets"]:
        assert not {"incremental_input", "incremental_scoring_pause_status"} & set(_target_variables(config, target))
    same = {"job_clusters", "timeout_seconds", "max_concurrent_runs", "queue", "email_notifications"}
    assert {k: job[k] for k in same} == {k: classic[k] for k in same}
    (task,), (classic_task,) = job["tasks"], classic["tasks"]
    differ = {"incremental", "checkpoint_location", "input"}
    widgets, classic_widgets = _widgets(task), _widgets(classic_task)
    assert {k: v for k, v in widgets.items() if k not in differ} == {
        k: v for k, v in classic_widgets.items() if k not in differ
    }
    assert params.from_strings(params.ScoreParams, {"input": "i", "output": "o", "incremental": "true"}).incremental
    assert widgets["checkpoint_location"].startswith(VOLUME + "/"), "a Unity Catalog volume the bundle names"
