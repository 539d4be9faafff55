"""The package's exceptions: one hierarchy, messages that say what was expected, found and to do.

Every failure a user can cause (a bad parameter, input, secret or configuration) is a
:class:`DiabetesSparkError`, and the console script exits 2 on it; anything else is a bug (exit 1).
Foreign exceptions (Spark's, Delta's, py4j's) are classified here and nowhere else:
:func:`error_condition`, :func:`spark_failures` and :func:`one_line`.
"""

from __future__ import annotations


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
