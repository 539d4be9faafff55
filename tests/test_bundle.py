"""The Databricks Asset Bundle, the notebooks and params.py agree; the Jobs API 2.1 JSON route matches.

Offline: the YAML is read with pyyaml, variables are substituted the way the Databricks CLI does for each
target (with a placeholder deploying user), and every job is built with databricks-sdk's JobSettings
model, failing on any field the model would silently drop.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from diabetes_spark import __version__, cli, params
from diabetes_spark.deploy import bundle as deploy_bundle  # `bundle` is the fixture below
from diabetes_spark.deploy import cron, secrets
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.redaction import SPARK_REDACTION_REGEX
from diabetes_spark.session import JOB_SPARK_CONF

ROOT = Path(__file__).resolve().parent.parent
USER = "deployer@example.com"
NOTEBOOK_PARAMS = {
    "diabetes_orchestrator_train.py": params.TrainParams,
    "diabetes_orchestrator_batch_score.py": params.ScoreParams,
}
WIDGET = re.compile(r'^dbutils\.widgets\.text\("([^"]+)", "([^"]*)"\)', re.MULTILINE)
JOB_KEYS = {"diabetes_retraining", "diabetes_batch_scoring"}
#: Widgets whose job value is deployment-specific; every other widget keeps its params.py default.
DEPLOYMENT_WIDGETS = {
    "wheel": "${var.wheel_path}",
    "secret_scope": "${var.secret_scope}",
    "databricks_job_id": "{{job.id}}",
    "databricks_run_id": "{{job.run_id}}",
    "training_data": "${var.training_data}",
    "input": "${var.scoring_input}",
    "output": "${var.predictions}",
    "experiment": "${var.experiment}",
    "model_name": "${var.model_name}",
    "batch_id": "{{job.run_id}}",
}


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return deploy_bundle.load_bundle(ROOT)


@pytest.fixture(scope="module")
def resolved(bundle: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> job key -> JobSettings dict (prod needs its required alert address)."""
    return {
        "dev": deploy_bundle.job_settings(bundle, "dev", user=USER),
        "prod": deploy_bundle.job_settings(bundle, "prod", user=USER, variables={"alert_email": "ops@example.com"}),
    }


def _tasks(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any], Path]]:
    """(job key, task, YAML folder) for every notebook task of the raw bundle."""
    return [
        (key, task, Path(job["__file__"]).parent)
        for key, job in bundle["resources"]["jobs"].items()
        for task in job["tasks"]
    ]


def _declared_widgets(notebook: Path) -> dict[str, str]:
    return dict(WIDGET.findall(notebook.read_text(encoding="utf-8")))


def test_the_bundle_defines_the_two_jobs_from_resources(bundle: dict[str, Any]) -> None:
    assert set(bundle["resources"]["jobs"]) == JOB_KEYS
    assert {Path(j["__file__"]).parent for j in bundle["resources"]["jobs"].values()} == {ROOT / "resources"}
    assert set(bundle["targets"]) == {"dev", "prod"}
    assert bundle["targets"]["dev"]["mode"] == "development"
    assert bundle["targets"]["prod"]["mode"] == "production"


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_job_builds_with_the_jobs_api_model_without_losing_a_field(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str
) -> None:
    for key, spec in resolved[target].items():
        settings = deploy_bundle.check_job_settings(spec, where=key)
        assert settings.as_dict() == spec
        assert "${" not in json.dumps(spec), f"unresolved variable in {key}"


def test_a_misspelt_field_or_enum_value_fails_the_model_check(resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    spec = copy.deepcopy(resolved["prod"]["diabetes_batch_scoring"])
    spec["max_concurent_runs"] = 1
    spec["schedule"]["pause_status"] = "PAUSD"
    spec["tasks"][0]["notebook_task"]["base_paramaters"] = {}
    with pytest.raises(ConfigurationError) as info:
        deploy_bundle.check_job_settings(spec, where="scoring")
    message = str(info.value)
    assert "scoring.max_concurent_runs" in message
    assert "scoring.schedule.pause_status" in message
    assert "scoring.tasks[0].notebook_task.base_paramaters" in message


def test_every_notebook_path_exists_and_maps_to_the_synced_workspace_file(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    for key, task, folder in _tasks(bundle):
        relative = task["notebook_task"]["notebook_path"]
        local = (folder / relative).resolve()
        assert local.is_file(), f"{key}: {relative} does not exist"
        assert local.parent == ROOT / "notebooks"
        (built,) = resolved["dev"][key]["tasks"]
        files = f"/Workspace/Users/{USER}/.bundle/diabetes-spark/dev/files"
        assert built["notebook_task"]["notebook_path"] == f"{files}/notebooks/{local.stem}"


def test_base_parameters_equal_the_notebook_widgets_and_params_py(bundle: dict[str, Any]) -> None:
    seen = set()
    for key, task, folder in _tasks(bundle):
        notebook = (folder / task["notebook_task"]["notebook_path"]).resolve()
        job_params = NOTEBOOK_PARAMS[notebook.name]
        base = task["notebook_task"]["base_parameters"]
        declared = _declared_widgets(notebook)
        expected = params.notebook_widgets(job_params)
        assert set(base) == set(declared) == set(expected), key
        assert declared == expected, f"{notebook.name}: widget defaults differ from params.py"
        names = [name for name, *_ in params.describe(params.NotebookParams) + params.describe(job_params)]
        assert list(declared) == names, f"{notebook.name}: widgets not declared in params.py order"
        seen.add(notebook.name)
    assert seen == set(NOTEBOOK_PARAMS)


def test_values_that_are_not_deployment_specific_are_the_params_defaults(bundle: dict[str, Any]) -> None:
    for key, task, folder in _tasks(bundle):
        notebook = (folder / task["notebook_task"]["notebook_path"]).resolve()
        defaults = params.notebook_widgets(NOTEBOOK_PARAMS[notebook.name])
        for name, value in task["notebook_task"]["base_parameters"].items():
            expected = DEPLOYMENT_WIDGETS.get(name, defaults[name])
            assert isinstance(value, str), f"{key}.{name}: {value!r} is not a string"
            assert value == expected, f"{key}.{name}: {value!r}, expected {expected!r}"


def test_job_and_run_ids_come_from_dynamic_value_references(resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    for jobs in resolved.values():
        for key, spec in jobs.items():
            base = spec["tasks"][0]["notebook_task"]["base_parameters"]
            assert (base["databricks_job_id"], base["databricks_run_id"]) == ("{{job.id}}", "{{job.run_id}}"), key
        # job.run_id, not task.run_id: every retry of a run scores the same batch, so it replaces its rows.
        scoring = jobs["diabetes_batch_scoring"]["tasks"][0]["notebook_task"]["base_parameters"]
        assert scoring["batch_id"] == "{{job.run_id}}"


def test_the_wheel_is_built_synced_attached_and_installed_from_one_path(
    bundle: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]
) -> None:
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl"
    assert artifact["build"].split()[:4] == ["python", "-m", "build", "--wheel"]
    assert "dist/*.whl" in bundle["sync"]["include"]
    wheel = f"${{workspace.file_path}}/dist/diabetes_spark-{__version__}-py3-none-any.whl"
    assert bundle["variables"]["wheel_path"]["default"] == wheel, "bump wheel_path with diabetes_spark.__version__"
    for target, jobs in resolved.items():
        expected = f"/Workspace/Users/{USER}/.bundle/diabetes-spark/{target}/files/dist/{Path(wheel).name}"
        for key, spec in jobs.items():
            (task,) = spec["tasks"]
            assert task["libraries"] == [{"whl": expected}], key
            assert task["notebook_task"]["base_parameters"]["wheel"] == expected, key


def test_secret_key_names_match_params_and_setup_secrets_defaults(bundle: dict[str, Any]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    secrets.add_arguments(parser)
    flags = vars(parser.parse_args(["--scope", "s"]))
    defaults = params.widget_defaults(params.NotebookParams)
    for key, task, _ in _tasks(bundle):
        base = task["notebook_task"]["base_parameters"]
        for field in secrets.SECRET_ENVIRONMENT:
            assert base[field] == defaults[field] == flags[field], f"{key}.{field}"
    assert bundle["variables"]["secret_scope"]["default"] == defaults["secret_scope"]


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_job_clusters_are_single_node_on_an_ml_lts_runtime(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str
) -> None:
    for key, spec in resolved[target].items():
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


@pytest.mark.parametrize(("target", "pause"), [("dev", "PAUSED"), ("prod", "UNPAUSED")])
def test_schedules_run_limits_timeouts_and_retries(
    resolved: dict[str, dict[str, dict[str, Any]]], target: str, pause: str
) -> None:
    jobs = resolved[target]
    for key, spec in jobs.items():
        cron.validate_quartz_cron(spec["schedule"]["quartz_cron_expression"])
        assert ZoneInfo(spec["schedule"]["timezone_id"])
        assert spec["schedule"]["pause_status"] == pause
        assert spec["max_concurrent_runs"] == 1
        assert spec["queue"] == {"enabled": True}
        assert spec["timeout_seconds"] > 0
        (task,) = spec["tasks"]
        assert 0 < task["timeout_seconds"] <= spec["timeout_seconds"]
        assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] >= 60_000, key
    # Weekly retraining (one day of the week), daily scoring (every day).
    train = jobs["diabetes_retraining"]["schedule"]["quartz_cron_expression"].split()
    score = jobs["diabetes_batch_scoring"]["schedule"]["quartz_cron_expression"].split()
    assert (train[3], train[4]) == ("?", "*") and re.fullmatch(r"[1-7]|SUN|MON|TUE|WED|THU|FRI|SAT", train[5])
    assert (score[3], score[4], score[5]) == ("*", "*", "?")
    assert jobs["diabetes_batch_scoring"]["tasks"][0]["retry_on_timeout"] is True


def test_failure_email_is_a_variable(resolved: dict[str, dict[str, dict[str, Any]]], bundle: dict[str, Any]) -> None:
    assert resolved["dev"]["diabetes_retraining"]["email_notifications"] == {"on_failure": [USER]}
    for spec in resolved["prod"].values():
        assert spec["email_notifications"] == {"on_failure": ["ops@example.com"]}
    with pytest.raises(ConfigurationError, match=r"\$\{var\.alert_email\}.*--var alert_email=VALUE"):
        deploy_bundle.job_settings(bundle, "prod", user=USER)


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


def test_jobs_json_route_writes_the_same_jobs(tmp_path: Path, resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    code = cli.main(
        [
            "jobs-json",
            "--bundle-dir",
            str(ROOT),
            "--target",
            "prod",
            "--out",
            str(tmp_path),
            "--user",
            USER,
            "--var",
            "alert_email=ops@example.com",
        ]
    )
    assert code == 0
    written = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert written == resolved["prod"]
    for key, spec in written.items():
        deploy_bundle.check_job_settings(spec, where=key)


def test_jobs_json_route_takes_a_root_path_and_variables(tmp_path: Path) -> None:
    root = "/Workspace/Shared/diabetes-spark"
    paths = deploy_bundle.write_jobs_json(
        ROOT, "dev", tmp_path, user=USER, root_path=root, variables={"secret_scope": "team-scope"}
    )
    spec = json.loads(next(p for p in paths if p.stem == "diabetes_retraining").read_text())
    (task,) = spec["tasks"]
    assert task["notebook_task"]["notebook_path"] == f"{root}/files/notebooks/diabetes_orchestrator_train"
    assert task["libraries"] == [{"whl": f"{root}/files/dist/diabetes_spark-{__version__}-py3-none-any.whl"}]
    assert task["notebook_task"]["base_parameters"]["secret_scope"] == "team-scope"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "staging"], "no target 'staging'"),
        (["--var", "secret_scop=x"], "unknown bundle variable(s) ['secret_scop']"),
        (["--var", "novalue"], "--var takes NAME=VALUE"),
        ([], "pass --user"),
    ],
)
def test_jobs_json_route_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    user = [] if not argv else ["--user", USER]
    code = cli.main(["jobs-json", "--bundle-dir", str(ROOT), "--out", str(tmp_path), *user, *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_the_deployment_guide_names_every_variable_job_and_secret_variable(bundle: dict[str, Any]) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in [*bundle["variables"], *bundle["resources"]["jobs"]]:
        assert f"`{name}`" in guide, f"docs/deploy.md does not mention {name}"
    for env, _ in secrets.SECRET_ENVIRONMENT.values():
        assert env in guide
    for command in ("databricks bundle deploy -t dev", "diabetes-spark setup-secrets", "jobs-json"):
        assert command in guide


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
