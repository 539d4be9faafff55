"""The fitted pipeline to and from MLflow: ``mlflow.spark`` on classic Spark, and over Spark Connect
the same format written and read another way.

``mlflow.spark`` moves the saved model between the driver's disk and Spark's through py4j, which
Spark Connect does not have (outside Databricks, where a ``/Volumes`` folder takes its place).
Over Connect the server saves and loads the model itself, so it is staged in a folder both the
client and the server reach: ``dfs_tmpdir`` (a Unity Catalog volume on Databricks, whose FUSE path
is the same), else a local temporary folder (a server on this machine). Logging goes through
MLflow's public custom-flavour API (``Model.log`` with this module as the flavour) and writes what
``mlflow.spark`` writes, so either side loads a model the other logged.

On classic Spark a model staged through a Unity Catalog volume is loaded the same way: MLflow 3.0.1
and earlier (DBR 15.4, 16.4, 17.3) rewrite a ``/Volumes`` ``dfs_tmpdir`` to ``/dbfs/Volumes/...`` on a
dedicated cluster (mlflow #18668, fixed in 3.8.1). On serverless compute a model above
:data:`SERVERLESS_MODEL_LIMIT` is refused before anything is logged.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diabetes_spark.schemas import PREDICTION

if TYPE_CHECKING:
    from mlflow.models import Model
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from diabetes_spark.registry import ResolvedModel


#: The run's artifact path of the logged model.
MODEL_ARTIFACT = "model"
#: ``mlflow.spark``'s flavour name and the sub-folder of its saved Spark ML model.
FLAVOR, MODEL_DATA = "spark", "sparkml"
#: Where Databricks mounts Unity Catalog volumes: the driver writes, and Spark reads, the same path.
VOLUMES = "/Volumes/"
#: The largest Spark ML model serverless compute takes (environment 4+: "100MB"; read as decimal, the
#: smaller reading, so a model that passes here passes there).
SERVERLESS_MODEL_LIMIT = 100 * 1000 * 1000
#: The folders :func:`_load_staged` left in place, oldest first: :func:`removing_staged_copies` removes them.
_STAGED: list[Path] = []


def log_model(
    model: PipelineModel, *, example: DataFrame, metadata: dict[str, Any] | None = None, dfs_tmpdir: str = ""
) -> Any:
    """Log the fitted pipeline in the active run, with its signature (``mlflow.spark``'s format).

    The signature is inferred from the schemas of ``example`` and of the model's output, which runs
    no Spark job. No input example is logged: ``mlflow.spark.log_model`` does not pass
    ``validate_serving_input=False`` on, so an example makes MLflow reload the model through pyfunc
    and predict on it (several Spark jobs). Pip requirements are given, not inferred: inference
    reloads the model in a subprocess with its own Spark.
    ``metadata`` goes into the model's ``MLmodel`` file. ``dfs_tmpdir`` (empty: MLflow's default,
    ``$MLFLOW_DFS_TMP``) is where the model is staged; standard access and serverless compute need
    a ``/Volumes/...`` path.

    Raises:
        ModelTooLargeError: On serverless compute, the saved model is above
            :data:`SERVERLESS_MODEL_LIMIT`; nothing was logged.
    """
    import mlflow
    import mlflow.spark
    import pyspark
    from mlflow.models import Model, infer_signature

    from diabetes_spark.runtime import is_connect, is_serverless

    signature = infer_signature(example, model.transform(example).select(PREDICTION))
    requirements = [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]
    logged = {"signature": signature, "pip_requirements": requirements, "metadata": metadata}
    if not (is_connect(example.sparkSession) or is_serverless()):
        return mlflow.spark.log_model(model, MODEL_ARTIFACT, dfs_tmpdir=dfs_tmpdir or None, **logged)
    # No py4j: the server saves the model (first, so its size is known before MLflow hears of it), and
    # this module is the flavour that moves it into the logged model.
    with _staging(dfs_tmpdir) as folder:
        model.write().save(str(folder))
        if is_serverless():
            check_size(folder, limit=SERVERLESS_MODEL_LIMIT)
        return Model.log(MODEL_ARTIFACT, flavor=sys.modules[__name__], spark_model=model, staged=folder, **logged)


def check_size(folder: Path, *, limit: int) -> int:
    """The size in bytes of the saved model in ``folder``, at most ``limit``.

    Raises:
        ModelTooLargeError: The model is larger; the message names both sizes and what to change.
    """
    from diabetes_spark.errors import ModelTooLargeError

    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    if size > limit:
        raise ModelTooLargeError(
            f"the fitted model takes {_megabytes(size)} saved, above serverless compute's limit of "
            f"{_megabytes(limit)} per Spark ML model; nothing was logged. Fit a smaller model (fewer trees: "
            "num_trees, shallower trees: max_depth, or estimator=linear), or train on a dedicated cluster "
            "and score there too"
        )
    return size


def _megabytes(size: int) -> str:
    """``size`` bytes in decimal megabytes, three significant digits below 100 MB."""
    return f"{size / 1e6:.3g} MB" if size < 100e6 else f"{size / 1e6:,.0f} MB"


def load_model(spark: SparkSession, resolved: ResolvedModel, *, dfs_tmpdir: str = "") -> PipelineModel:
    """Load a resolved version as a Spark ``PipelineModel`` (no pyfunc wrapper, no UDF), staged
    through ``dfs_tmpdir`` (see :func:`log_model`). Over Spark Connect ``spark``'s server loads it;
    through a volume (:data:`VOLUMES`) it is downloaded there and loaded, not by ``mlflow.spark``,
    whose loader before 3.8.1 turns a volume path into a ``/dbfs/Volumes`` one on a dedicated cluster."""
    import mlflow.spark

    from diabetes_spark.runtime import is_connect

    if is_connect(spark) or _base(dfs_tmpdir).startswith(VOLUMES):
        return _load_staged(spark, resolved.uri, dfs_tmpdir=dfs_tmpdir)
    return mlflow.spark.load_model(resolved.uri, dfs_tmpdir=dfs_tmpdir or None)


def _base(dfs_tmpdir: str) -> str:
    from mlflow.environment_variables import MLFLOW_DFS_TMP

    return dfs_tmpdir or (MLFLOW_DFS_TMP.get() if MLFLOW_DFS_TMP.defined else "") or tempfile.gettempdir()


def _new_folder(dfs_tmpdir: str) -> Path:
    """A fresh folder's path under ``dfs_tmpdir`` (else the temporary folder); not created."""
    return Path(_base(dfs_tmpdir)) / f"diabetes-spark-model-{uuid.uuid4().hex}"


@contextmanager
def _staging(dfs_tmpdir: str) -> Iterator[Path]:
    """A fresh folder under ``dfs_tmpdir`` (else the temporary folder), removed after the block."""
    folder = _new_folder(dfs_tmpdir)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def removing_staged_copies() -> Iterator[None]:
    """Remove, as the block ends, the model copies loaded through a staging folder in it.

    A loaded copy must outlive its ``load_model`` (see :func:`_load_staged`) but not the job that
    used it: a job wraps its whole body in this block, so each run leaves nothing in ``dfs_tmpdir``
    (on Databricks a volume, where copies would otherwise pile up run after run).
    """
    start = len(_STAGED)
    try:
        yield
    finally:
        for folder in _STAGED[start:]:
            shutil.rmtree(folder, ignore_errors=True)
        del _STAGED[start:]


def check_staging(spark: SparkSession, dfs_tmpdir: str) -> None:
    """Check, before a job reads anything, that the Spark Connect server reads what this process
    writes under ``dfs_tmpdir``: one small file written here is read there. Nothing to check on
    classic Spark, where ``mlflow.spark`` moves the model.

    Raises:
        ConfigurationError: ``dfs_tmpdir`` is not a local path (``/Volumes/...`` on Databricks), or
            the server cannot read it (it runs elsewhere): the model could not pass between them.
    """
    from diabetes_spark.errors import ConfigurationError, spark_failures
    from diabetes_spark.runtime import is_connect

    if not is_connect(spark):
        return
    base = _base(dfs_tmpdir)
    remedy = (
        "over Spark Connect the model passes through a folder both sides reach: set dfs_tmpdir to a Unity Catalog "
        "volume (/Volumes/<catalog>/<schema>/<volume>/tmp) on Databricks, run the Spark Connect server on this "
        "machine, or run on a dedicated (classic) cluster"
    )
    if "://" in base or not os.path.isabs(base):
        raise ConfigurationError(f"dfs_tmpdir {base!r} is not a folder of this machine; {remedy}")
    # How writing here or reading there fails, as one tuple of classes (the form except takes).
    failures: tuple[type[Exception], ...] = (OSError, *spark_failures())
    with _staging(dfs_tmpdir) as folder:
        token = uuid.uuid4().hex
        try:
            folder.mkdir(parents=True)
            (folder / "probe.txt").write_text(token, encoding="utf-8")
            seen = [row[0] for row in spark.read.text(str(folder / "probe.txt")).collect()]
        except failures as e:
            raise ConfigurationError(
                f"the Spark Connect server cannot read {base} ({type(e).__name__}); {remedy}"
            ) from e
    if seen != [token]:
        raise ConfigurationError(f"the Spark Connect server reads another {base} than this process; {remedy}")


def save_model(
    path: str,
    mlflow_model: Model,
    *,
    spark_model: PipelineModel,
    staged: Path,
    signature: Any = None,
    pip_requirements: list[str],
    **_: Any,
) -> None:
    """The flavour's save (called by ``Model.log``): the Spark ML model the server saved in
    ``staged``, moved into ``path``, with the ``MLmodel`` file and environment files
    ``mlflow.spark`` writes."""
    import pyspark
    import yaml
    from mlflow.pyfunc import add_to_model

    os.makedirs(path, exist_ok=True)
    shutil.move(str(staged), os.path.join(path, MODEL_DATA))
    if signature is not None:
        mlflow_model.signature = signature
    mlflow_model.add_flavor(
        FLAVOR,
        pyspark_version=pyspark.__version__,
        model_data=MODEL_DATA,
        code=None,
        model_class=f"{type(spark_model).__module__}.{type(spark_model).__name__}",
    )
    add_to_model(
        mlflow_model,
        loader_module="mlflow.spark",
        data=MODEL_DATA,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
        code=None,
    )
    requirements = pip_requirements
    python = ".".join(map(str, sys.version_info[:3]))
    Path(path, "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    environment = {"python": python, "build_dependencies": ["pip"], "dependencies": ["-r requirements.txt"]}
    Path(path, "python_env.yaml").write_text(yaml.safe_dump(environment), encoding="utf-8")
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": requirements}],
    }
    Path(path, "conda.yaml").write_text(yaml.safe_dump(conda), encoding="utf-8")
    mlflow_model.save(os.path.join(path, "MLmodel"))


def _load_staged(spark: SparkSession, model_uri: str, *, dfs_tmpdir: str = "") -> PipelineModel:
    """Load an ``mlflow.spark`` model as a ``PipelineModel``: its files are downloaded where Spark
    (over Connect: the server) reads them under the same path, and Spark loads them.

    The copy stays once loaded: a stage may read its data only when the model is used (Spark 3.5's
    ``ImputerModel`` does), so removing it here would break a later ``transform``. The job that
    loaded it removes it as it ends (:func:`removing_staged_copies`).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model
    from pyspark.ml import PipelineModel

    check_staging(spark, dfs_tmpdir)
    folder = _new_folder(dfs_tmpdir)
    try:
        folder.mkdir(parents=True)
        local = download_artifacts(artifact_uri=model_uri, dst_path=str(folder))
        data = Model.load(local).flavors[FLAVOR]["model_data"]
        loaded = PipelineModel.load(os.path.join(local, data))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _STAGED.append(folder)
    return loaded
