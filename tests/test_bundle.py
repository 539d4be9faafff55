"""The Databricks Asset Bundle, the notebooks and params.py agree; the Jobs API 2.1 JSON route matches.

Offline: the raw YAML is checked with databricks-bundles' typed models (``Job``, ``MlflowExperiment``),
which reject unknown fields and wrong types; then variables are substituted the way the Databricks CLI
does for each target (with a placeholder deploying user), and every job is checked again, substituted.
The jobs-json route reads a copy of the bundle with built wheels in ``dist/``, as ``bundle deploy`` would.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from databricks.bundles.experiments import MlflowExperiment
from databricks.bundles.jobs import Job

from diabetes_spark import __version__, cli, params
from diabetes_spark.deploy import bundle as deploy_bundle  # `bundle` is the fixture below
from diabetes_spark.deploy import cron, models, secrets, uploads
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.notebook import NOTEBOOKS
from diabetes_spark.redaction import SPARK_REDACTION_REGEX
from diabetes_spark.session import JOB_SPARK_CONF

ROOT = Path(__file__).resolve().parent.parent
USER = "deployer@example.com"
SERVICE_PRINCIPAL = "6f0c2c3e-0000-4000-8000-00000000beef"
#: What prod needs on top of its target values: the alert address, the run-as principal, the operators.
PROD_VARS = {"alert_email": "ops@example.com", "service_principal": SERVICE_PRINCIPAL, "operators_group": "ml-ops"}
NOTEBOOK_PARAMS = {
    "diabetes_orchestrator_train.py": params.TrainParams,
    "diabetes_orchestrator_batch_score.py": params.ScoreParams,
}
WIDGET = re.compile(r'^dbutils\.widgets\.text\("([^"]+)", "([^"]*)"\)', re.MULTILINE)
#: The serverless variant of batch scoring: a Python wheel task whose console script runs the scoring notebook.
SERVERLESS = "diabetes_batch_scoring_serverless"
#: The jobs on a job cluster (notebook tasks with the wheel as a task library).
CLASSIC_KEYS = {"diabetes_retraining", "diabetes_batch_scoring"}
JOB_KEYS = {*CLASSIC_KEYS, SERVERLESS}
#: Job -> the experiment (resources/experiments.yml) its runs go to.
JOB_EXPERIMENT = {
    "diabetes_retraining": "diabetes_training",
    "diabetes_batch_scoring": "diabetes_scoring",
    SERVERLESS: "diabetes_scoring",
}
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
    **{name: {job: "" if job == SERVERLESS else f"${{var.{name}}}" for job in JOB_KEYS} for name in STORAGE_SECRETS},
    "databricks_job_id": "{{job.id}}",
    "databricks_run_id": "{{job.run_id}}",
    "training_data": "${var.training_data}",
    "input": "${var.scoring_input}",
    "output": "${var.predictions}",
    "experiment": {job: f"${{resources.experiments.{key}.name}}" for job, key in JOB_EXPERIMENT.items()},
    "model_name": f"{UC}.diabetes_progression",
    "batch_id": "{{job.run_id}}",
    "dfs_tmpdir": f"{VOLUME}/mlflow_tmp",
}
WHEEL = f"diabetes_spark-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return deploy_bundle.load_bundle(ROOT)


@pytest.fixture(scope="module")
def raw() -> dict[str, dict[str, dict[str, Any]]]:
    """resource type -> key -> mapping, read straight from resources/*.yml (no substitution)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted((ROOT / "resources").glob("*.yml")):
        for kind, specs in yaml.safe_load(path.read_text(encoding="utf-8"))["resources"].items():
            out.setdefault(kind, {}).update(specs)
    return out


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle after its artifact build: dist/ holds this version's wheel and an older one."""
    root = tmp_path_factory.mktemp("bundle")
    shutil.copy(ROOT / "databricks.yml", root)
    for folder in ("resources", "notebooks"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "dist").mkdir()
    for name in ("diabetes_spark-0.0.9-py3-none-any.whl", WHEEL):
        (root / "dist" / name).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def resolved(bundle_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> job key -> JobSettings dict (prod needs its required variables)."""
    copied = deploy_bundle.load_bundle(bundle_dir)
    return {
        "dev": deploy_bundle.job_settings(copied, "dev", user=USER),
        "prod": deploy_bundle.job_settings(copied, "prod", user=USER, variables=PROD_VARS),
    }


def _tasks(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any], Path]]:
    """(job key, task, YAML folder) for every task of the raw bundle."""
    return [
        (key, task, Path(job["__file__"]).parent)
        for key, job in bundle["resources"]["jobs"].items()
        for task in job["tasks"]
    ]


def _widgets(task: dict[str, Any]) -> dict[str, str]:
    """The widgets a task sets: a notebook task's base_parameters, or a wheel task's --widget=NAME=VALUE."""
    if "notebook_task" in task:
        return task["notebook_task"]["base_parameters"]
    flags = [p[len(WIDGET_FLAG) :] for p in task["python_wheel_task"]["parameters"] if p.startswith(WIDGET_FLAG)]
    widgets = params.parse_assignments(flags, flag="--widget")
    assert len(widgets) == len(flags), f"a widget set twice: {flags}"
    return widgets


def _notebook(task: dict[str, Any], folder: Path) -> Path:
    """The notebook a task runs: its notebook_path, or the wheel's shipped notebook it names."""
    if "notebook_task" in task:
        return (folder / task["notebook_task"]["notebook_path"]).resolve()
    command, name = task["python_wheel_task"]["parameters"][:2]
    assert command == "notebook", command
    return ROOT / "notebooks" / NOTEBOOKS[name]  # setup.py ships notebooks/ as diabetes_spark._notebooks


def _declared_widgets(notebook: Path) -> dict[str, str]:
    return dict(WIDGET.findall(notebook.read_text(encoding="utf-8")))


def _retry_budget(task: dict[str, Any]) -> float:
    """Seconds a task may use with all its retries: every attempt times out, with the minimum wait between."""
    retries = task.get("max_retries", 0)
    return task["timeout_seconds"] * (retries + 1) + retries * task.get("min_retry_interval_millis", 0) / 1000


def test_the_bundle_defines_its_jobs_and_experiments_from_resources(bundle: dict[str, Any]) -> None:
    assert set(bundle["resources"]["jobs"]) == JOB_KEYS
    assert set(bundle["resources"]["experiments"]) == set(JOB_EXPERIMENT.values())
    for kind in ("jobs", "experiments"):
        assert {Path(s["__file__"]).parent for s in bundle["resources"][kind].values()} == {ROOT / "resources"}
    assert set(bundle["targets"]) == {"dev", "prod"}
    assert bundle["targets"]["dev"]["mode"] == "development"
    assert bundle["targets"]["prod"]["mode"] == "production"


def test_every_raw_job_and_experiment_passes_the_databricks_bundles_models(
    raw: dict[str, dict[str, dict[str, Any]]],
) -> None:
    assert set(raw) == {"jobs", "experiments"}, "a resource type the tests do not check"
    for key, spec in raw["jobs"].items():
        job = Job.from_dict(copy.deepcopy(spec))
        assert job.as_dict() == spec, key  # nothing dropped or changed
    for key, spec in raw["experiments"].items():
        experiment = MlflowExperiment.from_dict(copy.deepcopy(spec))
        assert experiment.as_dict() == spec, key
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
            "job_clusters",
            lambda s: s["job_clusters"][0]["new_cluster"].update(data_security_mode="SINGLE"),
            "DataSecurityMode",
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
    ],
)
def test_an_unknown_field_or_a_wrong_type_fails_the_typed_models(
    raw: dict[str, dict[str, dict[str, Any]]], kind: str, needs: str | None, change: Any, message: str
) -> None:
    model = {"jobs": Job, "experiments": MlflowExperiment}[kind]
    check = {"jobs": models.check_job_settings, "experiments": models.check_experiment}[kind]
    specs = {key: spec for key, spec in raw[kind].items() if needs is None or needs in spec}
    assert specs, f"no {kind[:-1]} has {needs}"
    for key, spec in specs.items():
        broken = copy.deepcopy(spec)
        change(broken)
        with pytest.raises(ValueError, match=re.escape(message)):
            model.from_dict(copy.deepcopy(broken))
        with pytest.raises(ConfigurationError, match=re.escape(f"{key} is not a valid")) as info:
            check(broken, where=key)
        assert message in str(info.value)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_substituted_job_passes_the_typed_model_without_losing_a_field(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str
) -> None:
    for key, spec in resolved[target].items():
        job = models.check_job_settings(spec, where=key)
        assert isinstance(job, Job)
        assert job.as_dict() == spec
        assert "${" not in json.dumps(spec), f"unresolved variable in {key}"


def test_a_misspelt_field_or_enum_value_fails_the_model_check(resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    changes = {
        "scoring.max_concurent_runs": lambda s: s.update(max_concurent_runs=1),
        "'PAUSD' is not a valid PauseStatus": lambda s: s["schedule"].update(pause_status="PAUSD"),
        "'base_paramaters' for class NotebookTask": lambda s: s["tasks"][0]["notebook_task"].update(base_paramaters={}),
    }
    for expected, change in changes.items():
        spec = copy.deepcopy(resolved["prod"]["diabetes_batch_scoring"])
        change(spec)
        with pytest.raises(ConfigurationError) as info:
            models.check_job_settings(spec, where="scoring")
        assert expected.split(".")[-1] in str(info.value)
        assert str(info.value).startswith("scoring is not a valid job: ")


def test_every_notebook_path_exists_and_maps_to_the_synced_workspace_file(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for key, task, folder in _tasks(bundle):
        local = _notebook(task, folder)
        assert local.is_file(), f"{key}: {local} does not exist"
        assert local.parent == ROOT / "notebooks"
        (built,) = resolved["dev"][key]["tasks"]
        if key == SERVERLESS:  # the notebook shipped in the wheel the environment installs: nothing synced
            assert "notebook_task" not in built
            continue
        files = f"/Workspace/Users/{USER}/.bundle/diabetes-spark/dev/files"
        assert built["notebook_task"]["notebook_path"] == f"{files}/notebooks/{local.stem}"


def test_base_parameters_equal_the_notebook_widgets_and_params_py(bundle: dict[str, Any]) -> None:
    seen = set()
    for key, task, folder in _tasks(bundle):
        notebook = _notebook(task, folder)
        job_params = NOTEBOOK_PARAMS[notebook.name]
        base = _widgets(task)
        declared = _declared_widgets(notebook)
        expected = params.notebook_widgets(job_params)
        # The serverless environment installs the wheel: no `wheel` widget for the notebook's %pip cell.
        omitted = {"wheel"} if key == SERVERLESS else set()
        assert set(base) == set(declared) - omitted == set(expected) - omitted, key
        assert "wheel" in declared
        assert declared == expected, f"{notebook.name}: widget defaults differ from params.py"
        names = [name for name, *_ in params.describe(params.NotebookParams) + params.describe(job_params)]
        assert list(declared) == names, f"{notebook.name}: widgets not declared in params.py order"
        seen.add(notebook.name)
    assert seen == set(NOTEBOOK_PARAMS)


def test_values_that_are_not_deployment_specific_are_the_params_defaults(bundle: dict[str, Any]) -> None:
    for key, task, folder in _tasks(bundle):
        defaults = params.notebook_widgets(NOTEBOOK_PARAMS[_notebook(task, folder).name])
        for name, value in _widgets(task).items():
            expected = DEPLOYMENT_WIDGETS.get(name, defaults[name])
            expected = expected[key] if isinstance(expected, dict) else expected
            assert isinstance(value, str), f"{key}.{name}: {value!r} is not a string"
            assert value == expected, f"{key}.{name}: {value!r}, expected {expected!r}"


def test_job_and_run_ids_come_from_dynamic_value_references(resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    for jobs in resolved.values():
        for key, spec in jobs.items():
            base = _widgets(spec["tasks"][0])
            assert (base["databricks_job_id"], base["databricks_run_id"]) == ("{{job.id}}", "{{job.run_id}}"), key
        # job.run_id, not task.run_id: every retry of a run scores the same batch, so it replaces its rows.
        for key in ("diabetes_batch_scoring", SERVERLESS):
            assert _widgets(jobs[key]["tasks"][0])["batch_id"] == "{{job.run_id}}", key


def test_the_wheel_is_the_builds_output_attached_by_glob_not_by_version(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl"
    assert artifact["build"].split()[:4] == ["python", "-m", "build", "--wheel"]
    assert artifact["build"].split()[4:6] == ["--outdir", "dist"]
    # The CLI uploads the libraries it attaches: nothing to sync from dist/, no version anywhere in the YAML.
    assert "dist/*.whl" not in (bundle.get("sync") or {}).get("include", [])
    assert "wheel_path" not in bundle["variables"]
    for path in [ROOT / "databricks.yml", *sorted((ROOT / "resources").glob("*.yml"))]:
        assert __version__ not in path.read_text(encoding="utf-8"), path
    for key, task, _ in _tasks(bundle):
        if key == SERVERLESS:  # the environment installs it (test_the_serverless_job_installs_...)
            continue
        assert task["libraries"] == [{"whl": "../dist/*.whl"}], key
        assert task["notebook_task"]["base_parameters"]["wheel"] == "", key
    # jobs-json names the newest built wheel where `bundle deploy` uploads it.
    roots = {
        "dev": f"/Workspace/Users/{USER}/.bundle/diabetes-spark/dev",
        "prod": f"/Workspace/Users/{SERVICE_PRINCIPAL}/.bundle/diabetes-spark/prod",
    }
    for target, jobs in resolved.items():
        for key, spec in jobs.items():
            (task,) = spec["tasks"]
            uploaded = f"{roots[target]}/artifacts/.internal/{WHEEL}"
            if key == SERVERLESS:
                (environment,) = spec["environments"]
                assert environment["spec"]["dependencies"] == [uploaded], "the same upload as the task libraries"
                continue
            assert task["libraries"] == [{"whl": uploaded}], key


def test_jobs_json_without_a_built_wheel_says_to_build_it(bundle_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bundle"
    shutil.copytree(bundle_dir, empty, ignore=shutil.ignore_patterns("*.whl"))
    with pytest.raises(ConfigurationError, match=r"no file matches '\.\./dist/\*\.whl'.*python -m build --wheel"):
        deploy_bundle.job_settings(deploy_bundle.load_bundle(empty), "dev", user=USER)


def test_the_serverless_job_has_no_cluster_or_library_and_its_task_names_a_declared_environment(
    raw: dict[str, dict[str, dict[str, Any]]], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for spec in (raw["jobs"][SERVERLESS], resolved["dev"][SERVERLESS], resolved["prod"][SERVERLESS]):
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
    for key in CLASSIC_KEYS:  # and the classic jobs declare no environment
        assert "environments" not in raw["jobs"][key], key


def test_the_serverless_job_installs_the_built_wheel_from_its_environment(
    raw: dict[str, dict[str, dict[str, Any]]],
) -> None:
    (environment,) = raw["jobs"][SERVERLESS]["environments"]
    assert environment["spec"]["dependencies"] == ["../dist/*.whl"], "the same glob as the classic task libraries"
    version = environment["spec"]["environment_version"]
    assert isinstance(version, str) and version.isdigit() and int(version) >= 5, (
        "environment 5 carries Databricks Connect 18 (Spark 4.1), the line of the pyspark pin"
    )
    (task,) = raw["jobs"][SERVERLESS]["tasks"]
    wheel_task = task["python_wheel_task"]
    assert wheel_task["package_name"] == "diabetes_spark"
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts[wheel_task["entry_point"]] == "diabetes_spark.cli:entry"  # raises a failing exit code


def test_the_serverless_parameters_are_the_notebook_subcommand_running_the_shipped_scoring_notebook(
    resolved: dict[str, dict[str, dict[str, Any]]],
) -> None:
    (task,) = resolved["prod"][SERVERLESS]["tasks"]
    parameters = task["python_wheel_task"]["parameters"]
    args = cli.build_parser().parse_args(parameters)
    assert (args.command, args.path) == ("notebook", "score")
    assert NOTEBOOKS[args.path] == "diabetes_orchestrator_batch_score.py"
    assert all(p.startswith(WIDGET_FLAG) for p in parameters[2:]), "nothing but widgets after the notebook"
    assert params.parse_assignments(args.widget, flag="--widget") == _widgets(task)


def test_serverless_widgets_equal_the_classic_scoring_parameters_minus_wheel(
    raw: dict[str, dict[str, dict[str, Any]]], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    classic = raw["jobs"]["diabetes_batch_scoring"]["tasks"][0]["notebook_task"]["base_parameters"]
    serverless = _widgets(raw["jobs"][SERVERLESS]["tasks"][0])
    expected = {k: "" if k in STORAGE_SECRETS else v for k, v in classic.items() if k != "wheel"}
    assert serverless == expected
    assert list(serverless) == list(expected), "in the notebook's (and params.py's) order"
    # With the bundle's values (storage variables empty by default), the two jobs score exactly alike.
    for target, jobs in resolved.items():
        base = _widgets(jobs["diabetes_batch_scoring"]["tasks"][0])
        assert _widgets(jobs[SERVERLESS]["tasks"][0]) == {k: v for k, v in base.items() if k != "wheel"}, target


def test_serverless_storage_secrets_stay_empty_whatever_the_storage_variables(bundle_dir: Path) -> None:
    oauth = {"storage_account_secret": "adls-account-name", "storage_client_id_secret": "adls-client-id"}
    jobs = deploy_bundle.job_settings(deploy_bundle.load_bundle(bundle_dir), "dev", user=USER, variables=oauth)
    assert {_widgets(jobs[SERVERLESS]["tasks"][0])[f] for f in STORAGE_SECRETS} == {""}
    classic = _widgets(jobs["diabetes_batch_scoring"]["tasks"][0])
    assert {f: classic[f] for f in oauth} == oauth, "the classic jobs take the route given"


def test_one_scoring_job_is_scheduled_and_a_variable_each_switches_them(bundle_dir: Path) -> None:
    copied = deploy_bundle.load_bundle(bundle_dir)

    def pauses(**variables: str) -> dict[str, str]:
        jobs = deploy_bundle.job_settings(copied, "prod", user=USER, variables={**PROD_VARS, **variables})
        return {key: spec["schedule"]["pause_status"] for key, spec in jobs.items()}

    assert pauses() == {"diabetes_retraining": "UNPAUSED", "diabetes_batch_scoring": "UNPAUSED", SERVERLESS: "PAUSED"}
    switched = pauses(batch_scoring_pause_status="PAUSED", serverless_scoring_pause_status="UNPAUSED")
    assert switched == {"diabetes_retraining": "UNPAUSED", "diabetes_batch_scoring": "PAUSED", SERVERLESS: "UNPAUSED"}
    for target in ("dev", "prod"):
        assert "serverless_scoring_pause_status" not in (copied["targets"][target].get("variables") or {}), target


@pytest.mark.parametrize(
    ("dependency", "expected"),
    [
        ("../dist/*.whl", [f"/ws/artifacts/.internal/{WHEEL}"]),  # newest version only, as for libraries
        ("../dist/*.whl[deploy]", [f"/ws/artifacts/.internal/{WHEEL}[deploy]"]),  # pip extras kept
        ("dist/extra-1.0-py3-none-any.whl", ["/ws/artifacts/.internal/extra-1.0-py3-none-any.whl"]),
        ("mlflow-skinny>=3.0,<4", ["mlflow-skinny>=3.0,<4"]),  # requirements by name: from the index
        ("requests", ["requests"]),
        ("-r /Workspace/requirements.txt", ["-r /Workspace/requirements.txt"]),  # pip options
        ("--index-url https://pypi.example.com/simple", ["--index-url https://pypi.example.com/simple"]),
        (
            "/Volumes/main/diabetes/files/x-1.0-py3-none-any.whl",
            ["/Volumes/main/diabetes/files/x-1.0-py3-none-any.whl"],
        ),
        ("https://example.com/x-1.0-py3-none-any.whl", ["https://example.com/x-1.0-py3-none-any.whl"]),
    ],
)
def test_jobs_json_rewrites_local_environment_dependencies_as_the_cli_does(
    tmp_path: Path, dependency: str, expected: list[str]
) -> None:
    source = tmp_path / "resources"
    (source / "dist").mkdir(parents=True)
    (tmp_path / "dist").mkdir()
    for name in ("diabetes_spark-0.0.9-py3-none-any.whl", WHEEL):
        (tmp_path / "dist" / name).write_bytes(b"")
    (source / "dist" / "extra-1.0-py3-none-any.whl").write_bytes(b"")
    context = {"workspace.artifact_path": "/ws/artifacts"}
    assert uploads.upload_dependencies(source, [dependency], context, where="job 'j'.environments[0]") == expected


def test_an_environment_dependency_matching_no_file_says_to_build_the_wheel(tmp_path: Path) -> None:
    context = {"workspace.artifact_path": "/ws/artifacts"}
    with pytest.raises(ConfigurationError, match=r"job 'j'\.environments\[0\]: no file matches '\.\./dist/\*\.whl'"):
        uploads.upload_dependencies(tmp_path, ["../dist/*.whl"], context, where="job 'j'.environments[0]")


def test_secret_key_names_match_params_and_setup_secrets_defaults(bundle: dict[str, Any]) -> None:
    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    flags = vars(parser.parse_args(["--scope", "s"]))
    defaults = params.widget_defaults(params.NotebookParams)
    assert set(secrets.SECRET_ENVIRONMENT) == {"appinsights_secret", *STORAGE_SECRETS}
    for field in secrets.SECRET_ENVIRONMENT:
        assert flags[field] == defaults[field], f"setup-secrets --{field.replace('_', '-')}"
    for key, task, _ in _tasks(bundle):
        base = _widgets(task)
        assert base["appinsights_secret"] == defaults["appinsights_secret"], key
        for field in STORAGE_SECRETS:  # a variable each, so a team picks OAuth or the key with --var
            assert base[field] == ("" if key == SERVERLESS else f"${{var.{field}}}"), f"{key}.{field}"
    assert bundle["variables"]["secret_scope"]["default"] == defaults["secret_scope"]


def test_the_default_storage_route_is_unity_catalog(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for field in STORAGE_SECRETS:
        assert bundle["variables"][field]["default"] == "", f"{field}: the bundle's default is no Spark credential"
        assert bundle["variables"][field]["description"], field
        for name, target in bundle["targets"].items():
            assert field not in (target.get("variables") or {}), f"{name} overrides {field}"
    for jobs in resolved.values():
        for key, spec in jobs.items():
            base = _widgets(spec["tasks"][0])
            assert {base[f] for f in STORAGE_SECRETS} == {""}, key


def test_model_and_table_names_are_built_from_the_catalog_and_schema(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    variables = bundle["variables"]
    assert variables["training_data"]["default"] == f"{UC}.diabetes_raw"
    assert variables["scoring_input"]["default"] == f"{UC}.diabetes_scoring"
    assert variables["predictions"]["default"] == f"{UC}.diabetes_predictions"
    dev = bundle["targets"]["dev"]["variables"]
    assert dev["training_data"] == f"{VOLUME}/diabetes.csv"
    assert dev["scoring_input"] == f"{VOLUME}/scoring_batch.csv"
    for target, jobs in resolved.items():
        catalog = (bundle["targets"][target].get("variables") or {}).get("catalog", variables["catalog"]["default"])
        schema = (bundle["targets"][target].get("variables") or {}).get("schema", variables["schema"]["default"])
        volume = variables["volume"]["default"]
        train = _widgets(jobs["diabetes_retraining"]["tasks"][0])
        scores = [_widgets(jobs[key]["tasks"][0]) for key in ("diabetes_batch_scoring", SERVERLESS)]
        for base in (train, *scores):
            assert base["model_name"] == f"{catalog}.{schema}.diabetes_progression", target
            assert base["dfs_tmpdir"] == f"/Volumes/{catalog}/{schema}/{volume}/mlflow_tmp", target
        for score in scores:
            assert score["output"] == f"{catalog}.{schema}.diabetes_predictions", target
            assert score["rejects"] == "", "rejects default to <output>_rejects"
            if target == "dev":
                assert score["input"] == f"/Volumes/{catalog}/{schema}/{volume}/scoring_batch.csv"
            else:
                assert score["input"] == f"{catalog}.{schema}.diabetes_scoring"
        if target == "dev":
            assert train["training_data"] == f"/Volumes/{catalog}/{schema}/{volume}/diabetes.csv"
        else:
            assert train["training_data"] == f"{catalog}.{schema}.diabetes_raw"
    assert bundle["targets"]["dev"]["variables"]["schema"] != variables["schema"]["default"], "dev has its own schema"


def test_each_job_logs_to_its_own_declared_experiment(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    folders = {"dev": f"/Users/{USER}", "prod": "/Shared"}
    for target, jobs in resolved.items():
        names = {}
        for key, spec in jobs.items():
            experiment = _widgets(spec["tasks"][0])["experiment"]
            expected = bundle["resources"]["experiments"][JOB_EXPERIMENT[key]]["name"]
            assert experiment == expected.replace("${var.experiment_folder}", folders[target]), (target, key)
            names[key] = experiment
        assert len(set(names.values())) == 2, "training and scoring runs go to different experiments"
        assert names[SERVERLESS] == names["diabetes_batch_scoring"], "both scoring jobs log to one experiment"


def test_a_reference_to_an_undeclared_experiment_fails(bundle_dir: Path) -> None:
    copied = deploy_bundle.load_bundle(bundle_dir)
    copied["resources"]["jobs"]["diabetes_retraining"]["tasks"][0]["notebook_task"]["base_parameters"]["experiment"] = (
        "${resources.experiments.diabetes_trainig.name}"
    )
    with pytest.raises(ConfigurationError, match=r"unknown reference \$\{resources\.experiments\.diabetes_trainig"):
        deploy_bundle.job_settings(copied, "dev", user=USER)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_job_clusters_are_single_node_on_an_ml_lts_runtime(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str
) -> None:
    for key in CLASSIC_KEYS:
        spec = resolved[target][key]
        (cluster,) = spec["job_clusters"]
        assert {t["job_cluster_key"] for t in spec["tasks"]} == {cluster["job_cluster_key"]}
        new = cluster["new_cluster"]
        assert re.fullmatch(r"\d+(\.\d+)?\.x-cpu-ml-scala2\.13", new["spark_version"]), new["spark_version"]
        assert new["spark_version"].startswith("18."), "the local pyspark pin is Spark 4.1 = Databricks Runtime 18"
        assert new["num_workers"] == 0
        assert new["data_security_mode"] == "SINGLE_USER"
        assert new["spark_conf"] == {
            "spark.databricks.cluster.profile": "singleNode",
            "spark.master": "local[*, 4]",
            "spark.databricks.conda.condaMagic.enabled": "true",
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


@pytest.mark.parametrize(("target", "pause"), [("dev", "PAUSED"), ("prod", "UNPAUSED")])
def test_schedules_run_limits_timeouts_and_retries(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str, pause: str
) -> None:
    jobs = resolved[target]
    for key, spec in jobs.items():
        cron.validate_quartz_cron(spec["schedule"]["quartz_cron_expression"])
        assert ZoneInfo(spec["schedule"]["timezone_id"])
        # Both scoring jobs write the same table: the serverless one stays paused unless a team switches.
        assert spec["schedule"]["pause_status"] == ("PAUSED" if key == SERVERLESS else pause), key
        assert spec["max_concurrent_runs"] == 1
        assert spec["queue"] == {"enabled": True}
        (task,) = spec["tasks"]
        assert 0 < _retry_budget(task) <= spec["timeout_seconds"], key
        assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] >= 60_000, key
    # Weekly retraining (one day of the week), daily scoring (every day).
    train = jobs["diabetes_retraining"]["schedule"]["quartz_cron_expression"].split()
    score = jobs["diabetes_batch_scoring"]["schedule"]["quartz_cron_expression"].split()
    assert (train[3], train[4]) == ("?", "*") and re.fullmatch(r"[1-7]|SUN|MON|TUE|WED|THU|FRI|SAT", train[5])
    assert (score[3], score[4], score[5]) == ("*", "*", "?")
    assert jobs["diabetes_batch_scoring"]["tasks"][0]["retry_on_timeout"] is True
    assert jobs[SERVERLESS]["schedule"] == {**jobs["diabetes_batch_scoring"]["schedule"], "pause_status": "PAUSED"}
    assert jobs[SERVERLESS]["tasks"][0]["retry_on_timeout"] is True


def test_failure_email_is_a_variable(resolved: dict[str, dict[str, dict[str, Any]]], bundle_dir: Path) -> None:
    assert resolved["dev"]["diabetes_retraining"]["email_notifications"] == {"on_failure": [USER]}
    for spec in resolved["prod"].values():
        assert spec["email_notifications"] == {"on_failure": ["ops@example.com"]}
    copied = deploy_bundle.load_bundle(bundle_dir)
    without = {k: v for k, v in PROD_VARS.items() if k != "alert_email"}
    with pytest.raises(ConfigurationError, match=r"\$\{var\.alert_email\}.*--var alert_email=VALUE"):
        deploy_bundle.job_settings(copied, "prod", user=USER, variables=without)


def test_prod_is_run_and_managed_by_a_principal_from_a_fixed_root(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]], bundle_dir: Path
) -> None:
    prod = bundle["targets"]["prod"]
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
        assert "default" not in bundle["variables"][name], name
    assert "run_as" not in bundle["targets"]["dev"] and "permissions" not in bundle["targets"]["dev"]
    for key, spec in resolved["prod"].items():
        assert spec["run_as"] == {"service_principal_name": SERVICE_PRINCIPAL}, key
        deployed = (
            spec["environments"][0]["spec"]["dependencies"][0]
            if key == SERVERLESS
            else spec["tasks"][0]["notebook_task"]["notebook_path"]
        )
        assert deployed.startswith(root.split("$")[0]), key
    for spec in resolved["dev"].values():
        assert "run_as" not in spec
    copied = deploy_bundle.load_bundle(bundle_dir)
    acl = deploy_bundle.job_permissions(copied, "prod", user=USER, variables=PROD_VARS)
    assert acl == [
        {"service_principal_name": SERVICE_PRINCIPAL, "permission_level": "CAN_MANAGE"},
        {"group_name": "ml-ops", "permission_level": "CAN_MANAGE_RUN"},
        {"group_name": "users", "permission_level": "CAN_VIEW"},
    ]
    # The deploying identity owns the jobs: like the CLI, its own entry is left out.
    as_principal = deploy_bundle.job_permissions(copied, "prod", user=SERVICE_PRINCIPAL, variables=PROD_VARS)
    assert as_principal == acl[1:]
    assert deploy_bundle.job_permissions(copied, "dev", user=USER) == []
    for name in ("service_principal", "operators_group"):
        without = {k: v for k, v in PROD_VARS.items() if k != name}
        with pytest.raises(ConfigurationError, match=f"--var {name}=VALUE"):
            deploy_bundle.write_jobs_json(bundle_dir, "prod", bundle_dir / "out", user=USER, variables=without)


def test_a_permission_level_a_bundle_does_not_accept_fails(bundle_dir: Path) -> None:
    copied = deploy_bundle.load_bundle(bundle_dir)
    copied["targets"] = copy.deepcopy(copied["targets"])
    copied["targets"]["prod"]["permissions"][1]["level"] = "CAN_MANAGE_RUN"  # a job level, not a bundle level
    with pytest.raises(ConfigurationError, match=r"level 'CAN_MANAGE_RUN' is not a bundle permission level"):
        deploy_bundle.job_permissions(copied, "prod", user=USER, variables=PROD_VARS)


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
    cron.validate_quartz_cron(expression)


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
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        cron.validate_quartz_cron(expression)


def test_jobs_json_route_writes_the_same_jobs(
    tmp_path: Path, bundle_dir: Path, resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    argv = ["jobs-json", "--bundle-dir", str(bundle_dir), "--target", "prod", "--out", str(tmp_path)]
    argv += ["--user", USER, *[a for k, v in PROD_VARS.items() for a in ("--var", f"{k}={v}")]]
    assert cli.main(argv) == 0
    written = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(written) == {f"{k}{suffix}" for k in JOB_KEYS for suffix in (".json", ".permissions.json")}
    for key in JOB_KEYS:
        assert written[f"{key}.json"] == resolved["prod"][key]
        models.check_job_settings(written[f"{key}.json"], where=key)
        acl = written[f"{key}.permissions.json"]["access_control_list"]
        assert {"group_name": "ml-ops", "permission_level": "CAN_MANAGE_RUN"} in acl


def test_jobs_json_route_takes_a_root_path_and_variables(tmp_path: Path, bundle_dir: Path) -> None:
    root = "/Workspace/Shared/diabetes-spark"
    paths = deploy_bundle.write_jobs_json(
        bundle_dir,
        "dev",
        tmp_path,
        user=USER,
        root_path=root,
        variables={"secret_scope": "team-scope", "catalog": "ml", "storage_account_secret": "adls-account-name"},
    )
    assert {p.name for p in paths} == {f"{k}.json" for k in JOB_KEYS}, "dev has no permissions"
    spec = json.loads((tmp_path / "diabetes_retraining.json").read_text())
    (task,) = spec["tasks"]
    assert task["notebook_task"]["notebook_path"] == f"{root}/files/notebooks/diabetes_orchestrator_train"
    assert task["libraries"] == [{"whl": f"{root}/artifacts/.internal/{WHEEL}"}]
    serverless = json.loads((tmp_path / f"{SERVERLESS}.json").read_text())
    assert serverless["environments"][0]["spec"]["dependencies"] == [f"{root}/artifacts/.internal/{WHEEL}"]
    # A storage route given for the classic jobs never reaches serverless compute, which would refuse it.
    assert _widgets(serverless["tasks"][0])["storage_account_secret"] == ""
    assert _widgets(serverless["tasks"][0])["secret_scope"] == "team-scope"
    base = task["notebook_task"]["base_parameters"]
    assert base["secret_scope"] == "team-scope"
    assert base["storage_account_secret"] == "adls-account-name"
    assert base["model_name"] == "ml.diabetes_dev.diabetes_progression"
    assert base["training_data"] == "/Volumes/ml/diabetes_dev/files/diabetes.csv"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "staging"], "no target 'staging'"),
        (["--var", "secret_scop=x"], "unknown bundle variable(s) ['secret_scop']"),
        (["--var", "novalue"], "--var takes NAME=VALUE"),
        (["--target", "prod", "--var", "alert_email=a@b.c"], "pass --var service_principal=VALUE"),
        ([], "pass --user"),
    ],
)
def test_jobs_json_route_fails_clearly(
    tmp_path: Path, bundle_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    user = [] if not argv else ["--user", USER]
    code = cli.main(["jobs-json", "--bundle-dir", str(bundle_dir), "--out", str(tmp_path), *user, *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("module", ["yaml", "databricks.bundles.jobs"])
def test_jobs_json_without_the_deploy_extra_says_how_to_install_it(
    tmp_path: Path, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were not installed
    code = cli.main(["jobs-json", "--bundle-dir", str(bundle_dir), "--out", str(tmp_path), "--user", USER])
    assert code == 2
    err = capsys.readouterr().err
    assert module in err and "pip install 'diabetes_spark[deploy]'" in err
    assert not list(tmp_path.glob("*.json"))


def test_the_deployment_guide_names_every_variable_job_experiment_and_secret_variable(bundle: dict[str, Any]) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in [*bundle["variables"], *bundle["resources"]["jobs"], *bundle["resources"]["experiments"]]:
        assert f"`{name}`" in guide, f"docs/deploy.md does not mention {name}"
    for env, _ in secrets.SECRET_ENVIRONMENT.values():
        assert env in guide
    for command in ("databricks bundle deploy -t dev", "diabetes-spark setup-secrets", "jobs-json"):
        assert command in guide
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
    for path in [ROOT / "databricks.yml", *sorted((ROOT / "resources").glob("*.yml"))]:
        yaml.load(path.read_text(encoding="utf-8"), Loader=Strict)
