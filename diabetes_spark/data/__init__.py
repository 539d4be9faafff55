"""Sample data shipped in the wheel: the diabetes data set (Efron et al., 2004) and a scoring batch.

Refer to a file as ``sample:<name>`` anywhere a table reference is accepted
(e.g. ``diabetes-spark ingest --source sample:diabetes.csv``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_PREFIX = "sample:"
SAMPLES = ("diabetes.csv", "scoring_batch.csv")


def sample_path(name: str) -> Path:
    """The local path of a shipped sample file.

    Raises:
        FileNotFoundError: ``name`` is not one of :data:`SAMPLES`.
    """
    if name not in SAMPLES:
        raise FileNotFoundError(f"no sample named {name!r}; shipped samples: {', '.join(SAMPLES)}")
    return Path(str(resources.files(__name__) / name))


def sample_uri(name: str) -> str:
    """A shipped sample file as Spark must name it: a ``file:`` URI. A bare path is resolved against
    Spark's default file system, which on a Databricks cluster is not the driver's disk (DBFS).

    Raises:
        FileNotFoundError: ``name`` is not one of :data:`SAMPLES`.
    """
    path = sample_path(name).resolve().as_posix()  # not as_uri(): Hadoop would encode its %-escapes again
    return "file:" + (path if path.startswith("/") else "/" + path)
