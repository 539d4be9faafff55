"""The package's exceptions: one hierarchy, messages that say what was expected, found and to do.

Every failure a user can cause (a bad parameter, input, secret or configuration) is a
:class:`DiabetesSparkError`, and the console script exits 2 on it; anything else is a bug (exit 1).
Foreign exceptions (Spark's, Delta's, py4j's, MLflow's, the OS's) are classified here and nowhere else:
:func:`error_condition`, :func:`spark_failures`, :func:`one_line`, and :func:`user_error`, which maps
each one a user can cause to one of the errors below; a Spark JVM's failures of memory are classified
beside it, in :mod:`diabetes_spark.jvm_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DiabetesSparkError(Exception):
    """Base class of every error this package raises on purpose."""


class ParamError(DiabetesSparkError, ValueError):
    """A job parameter (widget, CLI flag) has a bad value."""


class InputError(DiabetesSparkError):
    """An input file or table is missing, empty or unreadable."""


class WriteConflictError(DiabetesSparkError):
    """Concurrent writers kept conflicting with a Delta write; nothing of it was committed."""


class SchemaError(InputError):
    """Input columns do not match the expected schema (missing required columns)."""


class ReconciliationError(DiabetesSparkError):
    """Row counts do not add up: rows in != rows written + rows rejected."""


class RejectThresholdError(DiabetesSparkError):
    """Too large a share of the input was rejected to write anything."""


class TrainingError(DiabetesSparkError):
    """Training cannot proceed (too few rows, unknown estimator, ...)."""


class ValidationFailedError(TrainingError):
    """A new version missed a validation threshold (``validation_mode=enabled``); it stays the challenger."""


class ModelTooLargeError(TrainingError):
    """The fitted model is larger than the compute it runs on takes (serverless: 100 MB)."""


class RegistryError(DiabetesSparkError):
    """A model, version or alias does not exist in the registry, or cannot be used."""


class ConfigurationError(DiabetesSparkError):
    """The environment or a secret is misconfigured (bad connection string, missing secret)."""


class NotebookError(DiabetesSparkError):
    """A cell of a notebook run locally failed; the message names the cell."""


def one_line(error: BaseException, limit: int = 1000) -> str:
    """The gist of ``error`` on one line, at most ``limit`` characters.

    A Spark error is cut before its JVM stack trace (``Driver stacktrace:``); white space, line
    breaks included, is folded into single spaces.
    """
    java = getattr(error, "java_exception", None)
    try:
        text = str(java.getMessage()) if java is not None else str(error)
    except Exception:  # a JVM that is gone: its Python side still has the message
        text = str(error)
    text = " ".join(text.split("Driver stacktrace:")[0].split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_condition(error: Exception) -> str:
    """The error class of a Spark or Delta exception ('' when it has none).

    PySpark's own exceptions (classic and Connect) answer ``getCondition`` (``getErrorClass`` before
    Spark 4); an error PySpark does not convert, such as Delta's commit conflicts in classic mode,
    answers through the JVM exception it carries.
    """
    for source in (error, getattr(error, "java_exception", None)):
        for name in ("getCondition", "getErrorClass"):
            method = getattr(source, name, None)
            if not callable(method):
                continue
            try:
                condition = method()
            except Exception:  # a JVM method this Spark version does not have
                continue
            if condition:
                return str(condition)
    return ""


def spark_failures() -> tuple[type[Exception], ...]:
    """The exceptions a failed Spark job raises: pyspark's own (classic and Spark Connect) and, as a
    classic-only fallback, py4j's for the JVM errors classic pyspark does not convert. A Spark
    Connect-only client (``pyspark-client``) has no py4j."""
    from pyspark.errors import PySparkException

    try:
        from py4j.protocol import Py4JJavaError
    except ImportError:
        return (PySparkException,)
    return (PySparkException, Py4JJavaError)


#: Exit code of ``replay`` when some replayed rows differ from the stored ones (2 is a user's error).
EXIT_DIFFERENCES = 3


class ReplayDifferenceError(Exception):
    """A replay found rows that differ from the stored ones: an answer, not a user's error (exit 3).

    ``summary`` is the replay's summary (rows compared, rows differing), printed as on success."""

    def __init__(self, message: str, summary: dict[str, object]) -> None:
        super().__init__(message)
        self.summary = summary


class OutputError(DiabetesSparkError):
    """A destination table cannot be written as given (its place, its columns, another table's)."""


#: Error classes of Spark and Delta a user causes: what each says of the thing named, what to do,
#: and the error raised for it. Keyed by the class without its sub-condition (``FAILED_READ_FILE``).
_CONDITIONS: dict[str, tuple[type[DiabetesSparkError], str, str]] = {
    "DELTA_TABLE_NOT_FOUND": (
        InputError,
        "is not a Delta table",
        "give a Delta table, a .csv or .parquet file, or catalog.schema.table",
    ),
    "DELTA_MISSING_DELTA_TABLE": (
        InputError,
        "is not a Delta table",
        "give a Delta table, a .csv or .parquet file, or catalog.schema.table",
    ),
    "PATH_NOT_FOUND": (InputError, "does not exist", "check the path"),
    "TABLE_OR_VIEW_NOT_FOUND": (InputError, "does not exist", "check the name, or create the table first"),
    "SCHEMA_NOT_FOUND": (
        InputError,
        "is in a schema that does not exist",
        "create the schema (CREATE SCHEMA), or give a path",
    ),
    "REQUIRES_SINGLE_PART_NAMESPACE": (
        ParamError,
        "is a three-level name, which needs Unity Catalog",
        "off Databricks give schema.table or a path",
    ),
    "DELTA_STATE_RECOVER_ERROR": (
        InputError,
        "has a Delta log that cannot be read (corrupt or truncated)",
        "restore its _delta_log folder, or point at another table",
    ),
    "DELTA_VERSIONS_NOT_CONTIGUOUS": (
        InputError,
        "has a Delta log with missing commits",
        "restore its _delta_log folder, or point at another table",
    ),
    "DELTA_LOG_FILE_NOT_FOUND": (
        InputError,
        "has a Delta log with missing commits",
        "restore its _delta_log folder, or point at another table",
    ),
    "FAILED_READ_FILE": (
        InputError,
        "has a file that cannot be read (corrupt, truncated or removed)",
        "restore the file, or point at another table",
    ),
    "DELTA_CANNOT_CREATE_LOG_PATH": (OutputError, "cannot be created", "choose a location you can write to"),
    "JAVA_GATEWAY_EXITED": (
        ConfigurationError,
        "did not start",
        "check Java 17 (JAVA_HOME, or java on PATH) and DIABETES_SPARK_MASTER (e.g. local[2]), and free memory",
    ),
}

#: MLflow's error codes a user causes (a name it refuses, a missing or forbidden resource).
_MLFLOW_CODES: dict[str, tuple[type[DiabetesSparkError], str]] = {
    "INVALID_PARAMETER_VALUE": (ParamError, "refused a value"),
    "RESOURCE_DOES_NOT_EXIST": (RegistryError, "lacks a part of it (register or log it again, or choose another)"),
    "PERMISSION_DENIED": (ConfigurationError, "denied permission"),
    "UNAUTHENTICATED": (ConfigurationError, "refused the credentials"),
}


def user_error(error: BaseException, subject: str) -> DiabetesSparkError | None:
    """The :class:`DiabetesSparkError` for a foreign ``error`` a user caused, or ``None`` (a bug).

    ``subject`` names what the user gave (``"input /data/batch"``). Spark and Delta errors are told
    apart by their error class, MLflow's by their error code, others by their exception class;
    the message ends with the original class in brackets, for searching.
    """
    if isinstance(error, DiabetesSparkError):
        return error
    condition = error_condition(error) if isinstance(error, Exception) else ""
    known = _CONDITIONS.get(condition.split(".")[0])
    if known is not None:
        kind, meaning, todo = known
        return kind(f"{subject} {meaning}: {todo} [{condition}]")
    code = getattr(error, "error_code", None)  # MLflow's MlflowException
    if isinstance(code, str) and code in _MLFLOW_CODES:
        kind, meaning = _MLFLOW_CODES[code]
        return kind(f"{subject}: MLflow {meaning}: {one_line(error, 300)} [{code}]")
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)):
        return InputError(f"{subject}: {error.strerror or error} ({error.filename}) [{type(error).__name__}]")
    return None


@contextmanager
def about(subject: str) -> Iterator[None]:
    """Foreign errors raised in the block that a user can cause (see :func:`user_error`) re-raised
    as this package's, naming ``subject`` (``"input /data/batch"``); others propagate as they are."""
    try:
        yield
    except DiabetesSparkError:
        raise
    except Exception as error:
        mapped = user_error(error, subject)
        if mapped is None:
            raise
        raise mapped from error
