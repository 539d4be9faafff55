"""MLflow: where it lives (:class:`MlflowLocation`), logging, registering and loading the Spark
model, and aliases (not the deprecated stages). The champion gate is :mod:`diabetes_spark.promotion`.
Works with a workspace registry and with Unity Catalog (``catalog.schema.model`` names).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark.errors import ConfigurationError, RegistryError, one_line
from diabetes_spark.runtime import ENV_HOME, check_store, environment, is_databricks

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


_log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: The experiment tag MLflow 3's UI reads to choose its view, and the value of model training.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: Where the training run logs its reports, and the feature profile among them (read for drift).
REPORTS_ARTIFACT = "reports"
PROFILE_ARTIFACT = f"{REPORTS_ARTIFACT}/feature_profile.json"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
#: MLflow's scheme of the Unity Catalog model registry.
UC_REGISTRY = "databricks-uc"
#: Error codes with which registries answer a missing model or alias (SQL store, REST, Unity Catalog).
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


@dataclass(frozen=True)
class MlflowLocation:
    """Where a job tracks runs and registers models; the jobs receive it instead of a global.

    Attributes:
        tracking_uri: The tracking store (``sqlite:///...``, ``http://...``, ``databricks``).
        registry_uri: The model registry; ``None`` lets MLflow derive it from the tracking URI.
        artifact_root: Folder under which a new experiment keeps its artifacts (the local store).
    """

    tracking_uri: str
    registry_uri: str | None = None
    artifact_root: Path | None = None

    @classmethod
    def local(cls, home: Path) -> MlflowLocation:
        """The embedded default: a SQLite store ``<home>/mlflow.db`` (the registry needs a
        database), artifacts under ``<home>/mlartifacts``."""
        uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
        return cls(tracking_uri=uri, registry_uri=uri, artifact_root=home / "mlartifacts")

    @classmethod
    def from_environment(cls, home: Path) -> MlflowLocation:
        """``$MLFLOW_TRACKING_URI`` / ``$MLFLOW_REGISTRY_URI`` when set (Databricks sets its own),
        else :meth:`local` under ``home``. Only the local store gets an artifact location from us:
        any other tracking server decides where a new experiment's artifacts go.

        On Databricks, tracking to the workspace with no registry named, the registry is Unity
        Catalog's (:data:`UC_REGISTRY`): MLflow 2 (DBR 15.4, 16.4) would otherwise pick the workspace
        registry unless the workspace's default catalog is in Unity Catalog, and the serverless
        scorer, on Unity Catalog, would not find the model.
        """
        import mlflow

        tracking, registry = os.environ.get(ENV_TRACKING_URI), os.environ.get(ENV_REGISTRY_URI) or None
        if tracking or is_databricks():
            tracking = tracking or mlflow.get_tracking_uri()
            if registry is None and is_databricks() and tracking.split("://")[0] == "databricks":
                registry = UC_REGISTRY + tracking[len("databricks") :]  # a CLI profile (databricks://p) kept
            return cls(tracking_uri=tracking, registry_uri=registry)
        local = cls.local(home)
        return replace(local, registry_uri=registry or local.registry_uri)

    @contextmanager
    def active(self) -> Iterator[MlflowLocation]:
        """Point MLflow's fluent API (runs, logging, ``mlflow.spark``) here for the block, and back
        where it was after it. MLflow exports the URIs it is given to the environment (for
        subprocesses); the variables are put back exactly as they were."""
        import mlflow

        if self.artifact_root is not None and self.tracking_uri.startswith("sqlite:"):
            try:
                self.artifact_root.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigurationError(
                    f"the local workspace folder {self.artifact_root.parent} (set by {ENV_HOME}, default ./lakehouse) "
                    f"cannot be created ({e.strerror}): point {ENV_HOME} at a folder you can write to "
                    f"[{type(e).__name__}]"
                ) from e
        had = {name: bool(os.environ.get(name)) for name in (ENV_TRACKING_URI, ENV_REGISTRY_URI)}
        tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        # The tracking URI is exported as later MLflow releases (2.21 on DBR 16.4) do themselves; MLflow
        # 2.13 (DBR 15.4) does not, and a nested block reads the environment to know an outer one set it.
        # Both variables are put back exactly as they were, whatever MLflow exported meanwhile.
        exported = {ENV_TRACKING_URI: self.tracking_uri, ENV_REGISTRY_URI: os.environ.get(ENV_REGISTRY_URI)}
        check_store(self.tracking_uri, ENV_TRACKING_URI if os.environ.get(ENV_TRACKING_URI) else ENV_HOME)
        if self.registry_uri and self.registry_uri != self.tracking_uri:
            check_store(self.registry_uri, ENV_REGISTRY_URI)
        with environment(exported):
            mlflow.set_tracking_uri(self.tracking_uri)
            # Always set, None included (then MLflow derives it from the tracking URI): a registry set
            # for another location before this block must not stay in force.
            mlflow.set_registry_uri(self.registry_uri)  # type: ignore[arg-type]
            try:
                yield self
            finally:
                # MLflow's state back to what it was: explicit URIs if the environment had any, else none.
                mlflow.set_tracking_uri(tracking if had[ENV_TRACKING_URI] else None)  # type: ignore[arg-type]
                mlflow.set_registry_uri(registry if had[ENV_REGISTRY_URI] else None)  # type: ignore[arg-type]

    def open_store(self) -> None:
        """Create the local SQLite store (MLflow runs its schema migrations), or open the existing one;
        nothing for any other store."""
        if not self.tracking_uri.startswith("sqlite:"):
            return
        from mlflow.tracking import MlflowClient

        if self.artifact_root is not None:
            self.artifact_root.parent.mkdir(parents=True, exist_ok=True)
        MlflowClient(self.tracking_uri, self.registry_uri).search_experiments(max_results=1)

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (artifacts under :attr:`artifact_root`) if missing."""
        return ensure_experiment(name, artifact_root=self.artifact_root)


def ensure_experiment(name: str, *, artifact_root: Path | None = None) -> str:
    """The id of experiment ``name``, created (with artifacts under ``artifact_root``) if missing.

    A created experiment is tagged as model development (:data:`EXPERIMENT_KIND`), so MLflow 3's UI
    opens it in the model-training view rather than the GenAI one.
    """
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (artifact_root / name.strip("/").replace("/", "_")).resolve().as_uri() if artifact_root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
    except Exception:  # created concurrently by another run: use that one
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def model_metadata(resolved: ResolvedModel) -> dict[str, Any]:
    """The ``metadata`` of a registered version's ``MLmodel`` file (one small download, no Spark)."""
    from mlflow.models import get_model_info

    return dict(get_model_info(resolved.uri).metadata or {})


def register(model_uri: str, name: str) -> str:
    """Register ``model_uri`` as a new version of ``name``; returns the version number.

    MLflow prints its registration messages on stderr rather than logging them; here they go to
    MLflow's own logger at INFO, so ``MLFLOW_LOGGING_LEVEL`` decides whether they show.
    """
    import mlflow

    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        version = mlflow.register_model(model_uri, name)
    for line in filter(str.strip, printed.getvalue().splitlines()):
        logging.getLogger("mlflow").info(line)
    return str(version.version)


def _client() -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or ``None`` when the model or alias does not exist.

    Only a "not found" answer means ``None``: a registry that cannot be read (a locked SQLite store,
    a network error) raises, or the champion gate would take it for "no champion" and promote.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if e.error_code in _NOT_FOUND:
            return None
        raise


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``alias`` of model ``name`` at ``version``; the last of several concurrent calls wins.

    MLflow's SQL store sets an alias by looking it up, then inserting or updating it. Two training
    runs that set a new alias at the same moment both find none, and the second insert breaks the
    alias' unique key. The alias then exists, so a new attempt updates it: that conflict is retried.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(1, _ALIAS_ATTEMPTS + 1):
        try:
            _client().set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if attempt == _ALIAS_ATTEMPTS or not _is_concurrent_insert(e):
                raise
            _log.info(
                "Alias %r of %s was created concurrently; setting it again (attempt %d)", alias, name, attempt + 1
            )


#: Attempts to set an alias that other runs keep creating concurrently (one conflict is the norm).
_ALIAS_ATTEMPTS = 3


def _is_concurrent_insert(error: Exception) -> bool:
    """Whether a registry error is a SQL store's unique-key conflict (a row inserted concurrently)."""
    try:
        from sqlalchemy.exc import IntegrityError
    except ImportError:  # mlflow-skinny talks to a REST registry only, which serialises its own writes
        return False
    return isinstance(error.__cause__, IntegrityError)


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version resolved once, so a whole run uses the same one."""

    name: str
    version: str
    run_id: str
    source: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_version(name: str, *, version: str = "", alias: str = CHAMPION) -> ResolvedModel:
    """Resolve a model version by number, or by alias when no number is given.

    Raises:
        RegistryError: The model, version or alias does not exist; the message names what does.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as e:
        _raise_unless_not_found(e, f"registered model {name!r}")
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise RegistryError(
            f"registered model {name!r} does not exist; registered models: {names or 'none'}. Train one first."
        ) from e
    try:
        mv = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        _raise_unless_not_found(e, f"model {name!r}")
        versions = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
        aliases = {alias: str(v) for alias, v in sorted((registered.aliases or {}).items())}
        wanted = f"version {version}" if version else f"alias {alias!r}"
        raise RegistryError(
            f"{wanted} of model {name!r} does not exist; versions: {versions or 'none'}, aliases: {aliases or 'none'}"
        ) from e
    return ResolvedModel(name=name, version=str(mv.version), run_id=mv.run_id or "", source=mv.source or "")


def _raise_unless_not_found(error: Exception, what: str) -> None:
    """Re-raise a registry error that is not a "not found" answer as a :class:`RegistryError`."""
    import mlflow

    if getattr(error, "error_code", None) not in _NOT_FOUND:
        raise RegistryError(
            f"cannot read {what} from the model registry at {mlflow.get_registry_uri()}: {one_line(error, 500)}. "
            "Check MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI and that the server is reachable."
        ) from error


def check_model_name(name: str) -> None:
    """Under a Unity Catalog registry (``databricks-uc``) a model name has three levels.

    Raises:
        ConfigurationError: ``name`` is not ``catalog.schema.model``; the message says what to pass.
    """
    import mlflow

    uri = mlflow.get_registry_uri() or ""
    if uri.startswith(UC_REGISTRY) and (name.count(".") != 2 or "" in name.split(".")):
        leaf = name.rsplit(".", 1)[-1] or "diabetes_progression"
        raise ConfigurationError(
            f"model_name {name!r} is not a Unity Catalog model name: the registry {uri} needs "
            f"catalog.schema.model, e.g. main.diabetes.{leaf}. Pass it as --model-name or the model_name widget "
            "(the schema must exist and you need CREATE MODEL on it)."
        )


def training_profile(resolved: ResolvedModel, log: logging.Logger) -> dict[str, Any] | None:
    """The feature profile logged with the version's training run, or ``None`` (with a warning)."""
    import mlflow

    try:
        return mlflow.artifacts.load_dict(f"runs:/{resolved.run_id}/{PROFILE_ARTIFACT}")
    except Exception as e:  # a model trained elsewhere may have none: drift is then not scored
        log.warning(
            "no feature profile for %s (training run %s): drift not scored (%s)", resolved.uri, resolved.run_id, e
        )
        return None


def version_tags(name: str, version: str, tags: dict[str, Any]) -> None:
    """Set tags on a model version (e.g. its score and the gate's decision)."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def tags_of(name: str, version: str) -> dict[str, str]:
    """A model version's tags (its validation verdict, the gate's decision)."""
    return dict(_client().get_model_version(name, version).tags or {})


def describe_version(name: str, version: str, description: str) -> None:
    """Set a model version's description (shown in the registry UI)."""
    _client().update_model_version(name, version, description=description)
