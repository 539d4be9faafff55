"""Provenance: the exact input a run read, recorded on its MLflow run, and read back from it.

A Delta input is read at one version, found with ``DESCRIBE HISTORY`` (:func:`storage.delta_version`),
which works over Spark Connect as well as classic Spark; ``mlflow.data.load_delta`` reads the version
through ``spark._jvm`` and records none over Connect. A file input is identified by its fingerprint
(paths, sizes, modification times). Each is logged with ``mlflow.log_input`` as a dataset whose
source names the table and its version (or the file), so the MLflow UI shows it, and as run tags,
from which ``rescore`` and ``replay`` read a batch's input again (:func:`from_run`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diabetes_spark import storage
from diabetes_spark.storage import TableRef

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import DataFrame, SparkSession

#: Run tags naming the input a run read: its reference, kind, Delta version or file fingerprint.
TAG_REF, TAG_KIND, TAG_VERSION, TAG_FINGERPRINT = "input_ref", "input_kind", "input_version", "input_fingerprint"
#: ``mlflow.log_input`` contexts: what the dataset was to the run.
TRAINING, EVALUATION, SCORING, SOURCE = "training", "evaluation", "scoring", "source"


@dataclass(frozen=True)
class InputVersion:
    """One read of an input: a Delta table at ``version``, or files with ``fingerprint``."""

    ref: TableRef
    version: int | None = None
    fingerprint: str = ""

    def __str__(self) -> str:
        return f"{self.ref} v{self.version}" if self.version is not None else f"{self.ref} (files {self.fingerprint})"

    @property
    def digest(self) -> str:
        """A short digest of this exact read (MLflow's dataset digest)."""
        if self.version is None:
            return self.fingerprint
        return hashlib.sha256(f"{self.ref.location}@{self.version}".encode()).hexdigest()[:12]

    def tags(self) -> dict[str, str]:
        """The run tags of this read (see :func:`from_run`)."""
        version = "" if self.version is None else str(self.version)
        return {
            TAG_REF: self.ref.location,
            TAG_KIND: self.ref.kind,
            TAG_VERSION: version,
            TAG_FINGERPRINT: self.fingerprint,
        }


def read_pinned(spark: SparkSession, ref: TableRef) -> tuple[DataFrame, InputVersion]:
    """``ref`` read at its current Delta version (or, for files, fingerprinted), and that read.

    Raises:
        InputError: As :func:`storage.read_table`.
    """
    df, version = storage.read_versioned(spark, ref, pinned=True)
    return df, InputVersion(ref, version, "" if version is not None else storage.input_fingerprint(df))


def from_tags(tags: Mapping[str, str]) -> InputVersion | None:
    """The input a run's tags record, or ``None`` when they record none (a run from before provenance)."""
    location, kind = tags.get(TAG_REF), tags.get(TAG_KIND)
    if not location or kind not in ("delta", "table", "csv", "parquet"):
        return None
    version = tags.get(TAG_VERSION) or ""
    ref = TableRef(kind, location)  # type: ignore[arg-type]  # checked just above
    return InputVersion(ref, int(version) if version.isdigit() else None, tags.get(TAG_FINGERPRINT, ""))


def log_input(read: InputVersion, *, context: str, name: str = "", tags: bool = True) -> None:
    """``read`` as a dataset of the active MLflow run (``mlflow.log_input``), and (with ``tags``) as its tags."""
    import mlflow

    _log(_dataset(read, name or read.ref.location.rstrip("/").rsplit("/", 1)[-1]), context)
    if tags:
        mlflow.set_tags(read.tags())


def log_splits(read: InputVersion, *, seed: int, train_fraction: float) -> None:
    """The training and evaluation splits of ``read`` as datasets of the active run: the same source and
    version, named and digested by their split (seed and fraction make the split reproducible)."""

    base = read.ref.location.rstrip("/").rsplit("/", 1)[-1]
    for part, context in (("train", TRAINING), ("test", EVALUATION)):
        digest = hashlib.sha256(f"{read.digest}|{part}|{seed}|{train_fraction}".encode()).hexdigest()[:12]
        _log(_dataset(read, f"{base} ({part} split, seed {seed})", digest), context)


def _log(dataset: Any, context: str) -> None:
    """``mlflow.log_input``, once more if it fails: two runs logging the same dataset at once race in
    the tracking store (both insert it; one hits the unique key), and the second try finds it there.
    Any other failure fails again and is raised."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException:
        time.sleep(0.2)
        mlflow.log_input(dataset, context=context)


def _dataset(read: InputVersion, name: str, digest: str = "") -> Any:
    """An MLflow dataset naming ``read``'s source and version; its digest is given, so building it runs
    no Spark job (a ``SparkDataset`` would count rows through the JVM, which Connect has not)."""
    from mlflow.data.meta_dataset import MetaDataset

    # MLflow's Dataset declares ``profile`` abstract to type checkers; MetaDataset answers None at run time.
    return MetaDataset(_source(read), name=name, digest=digest or read.digest)  # type: ignore[abstract]


def _source(read: InputVersion) -> Any:
    """A Delta dataset source with its explicit version, or a file's Spark dataset source."""
    if read.ref.kind == "table":
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        return DeltaDatasetSource(delta_table_name=read.ref.location, delta_table_version=read.version)
    if read.ref.kind == "delta":
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        return DeltaDatasetSource(path=read.ref.location, delta_table_version=read.version)
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    return SparkDatasetSource(path=read.ref.location)


def run_input(run_id: str) -> tuple[dict[str, str], InputVersion | None]:
    """A run's tags and the input they record."""
    from mlflow.tracking import MlflowClient

    tags = dict(MlflowClient().get_run(run_id).data.tags)
    return tags, from_tags(tags)
