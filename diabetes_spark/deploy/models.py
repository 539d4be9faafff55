"""The typed models of ``databricks-bundles`` that check bundle resources: they reject unknown
fields, values outside an enum and values of the wrong type (databricks-sdk's ``from_dict`` drops
them silently). Also how the deploy-time commands import the ``deploy`` extra's packages.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from diabetes_spark.errors import ConfigurationError

__all__ = ["DEPLOY_EXTRA", "import_deploy_module", "check_job_settings", "check_experiment", "check_job_permission"]

#: How to install what the deploy-time commands need (databricks-sdk, databricks-bundles, pyyaml).
DEPLOY_EXTRA = "pip install 'diabetes_spark[deploy]'"


def import_deploy_module(name: str, purpose: str) -> ModuleType:
    """Import ``name``, one of the ``deploy`` extra's packages.

    Raises:
        ConfigurationError: It is not installed; the message says how to install the extra.
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigurationError(f"{purpose} needs {e.name or name}, which is not installed: {DEPLOY_EXTRA}") from e


def _check(module: str, model: str, spec: Mapping[str, Any], what: str) -> Any:
    """``spec`` built as ``module.model`` of databricks-bundles, or a :class:`ConfigurationError`."""
    models = import_deploy_module(module, "checking the bundle")
    try:
        return getattr(models, model).from_dict(copy.deepcopy(dict(spec)))
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"{what}: {e}") from e


def check_job_settings(spec: Mapping[str, Any], *, where: str = "job") -> Any:
    """``spec`` as a ``databricks.bundles.jobs.Job``.

    Raises:
        ConfigurationError: Naming ``where`` and what the model rejected.
    """
    return _check("databricks.bundles.jobs", "Job", spec, f"{where} is not a valid job")


def check_experiment(spec: Mapping[str, Any], *, where: str = "experiment") -> Any:
    """``spec`` as a ``databricks.bundles.experiments.MlflowExperiment``.

    Raises:
        ConfigurationError: Naming ``where`` and what the model rejected.
    """
    return _check(
        "databricks.bundles.experiments", "MlflowExperiment", spec, f"{where} is not a valid MLflow experiment"
    )


def check_job_permission(entry: Mapping[str, Any], *, where: str) -> Any:
    """One job access-control entry as a ``databricks.bundles.jobs.JobPermission``."""
    return _check("databricks.bundles.jobs", "JobPermission", entry, where)
