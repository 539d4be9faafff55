"""A Spark JVM's failures of memory, beside :mod:`diabetes_spark.errors`: a job that ran out of JVM
memory told from the exception it raised, and both it and a JVM that died worded as the
:class:`~diabetes_spark.errors.ConfigurationError` they are (exit 2), naming the memory limit.
"""

from __future__ import annotations

from diabetes_spark.errors import ConfigurationError

#: JVM classes of running out of memory: the heap (or an array larger than it may be), and the
#: execution memory Spark's memory manager could not grant.
OUT_OF_MEMORY = ("java.lang.OutOfMemoryError", "org.apache.spark.memory.SparkOutOfMemoryError")
#: Spark's exit code for a JVM that ran out of memory (``SparkExitCode.OOM``): a local JVM exits with it
#: when a task does, the driver and its executor being one JVM.
SPARK_OOM_EXIT = 52
#: What a job that failed midway leaves: the advice closing both messages.
_RERUN = "rerun the job (a rerun replaces what a batch wrote)"


class JvmMemoryError(ConfigurationError):
    """A Spark JVM's failure of memory, already classified: the job's recorder raises it, and the
    command line that catches it prints it as it is, without asking the JVM again."""


def out_of_memory(error: BaseException) -> str:
    """The JVM class of the out-of-memory error behind ``error`` ('' when there is none).

    Walks ``error``'s Python causes and, for each, the JVM exception it carries (py4j's
    ``java_exception``, pyspark's captured origin) through ``getCause()``, by class name; where no
    object carries the class, :func:`_named_out_of_memory` reads the text.
    """
    current: BaseException | None = error
    for _ in range(20):
        if current is None:
            return ""
        java = getattr(current, "java_exception", None) or getattr(current, "_origin", None)
        found = _java_out_of_memory(java) or _named_out_of_memory(current)
        if found:
            return found
        current = current.__cause__ or current.__context__
    return ""


def _java_out_of_memory(java: object) -> str:
    """The out-of-memory class of the JVM exception ``java`` or its causes ('' for none, or no JVM to ask)."""
    for _ in range(20):
        if java is None:
            return ""
        try:
            name = str(java.getClass().getName())  # type: ignore[attr-defined]
            if name in OUT_OF_MEMORY:
                return name
            java = java.getCause()  # type: ignore[attr-defined]
        except Exception:  # a JVM that is gone cannot be asked
            return ""
    return ""


def _named_out_of_memory(error: BaseException) -> str:
    """``java.lang.OutOfMemoryError`` when the text of ``error`` names one of :data:`OUT_OF_MEMORY`, else ''.

    Text, not class, because no structured field carries it in two cases: Spark's ``Job aborted due
    to stage failure`` names a task's failure only in its message when the task's throwable did not
    reach the driver, and a Spark Connect client keeps the server's JVM classes only in the message and
    the server's stack trace (``getStackTrace``).
    """
    texts = []
    for read in (lambda: str(error), getattr(error, "getStackTrace", None)):
        try:
            texts.append(str(read() or "") if callable(read) else "")
        except Exception:  # py4j's str() asks the JVM, which may be gone
            continue
    return OUT_OF_MEMORY[0] if any(name in text for name in OUT_OF_MEMORY for text in texts) else ""


def _under(limit: int | None) -> str:
    return f"a memory limit of {limit / 2**30:.1f} GiB" if limit else "no memory limit we could read"


def jvm_died(cause: str, limit: int | None) -> JvmMemoryError:
    """The error for a Spark JVM that died under the job, naming the memory (bytes) the process may use."""
    return JvmMemoryError(
        f"the Spark JVM died during the job, under {_under(limit)} (killed, most likely for memory): set "
        f"DIABETES_SPARK_DRIVER_MEMORY below that limit (e.g. 1500m), or give the process more memory; {_RERUN} "
        f"[{cause}]"
    )


def ran_out_of_memory(cause: str, limit: int | None, driver: str | None) -> JvmMemoryError:
    """The error for a Spark job that ran out of JVM memory, naming the memory (bytes) the process may
    use and the local driver's heap (``driver``: ``spark.driver.memory``; ``None``: a cluster's)."""
    if driver is None:
        return JvmMemoryError(
            "the Spark job ran out of memory on the cluster: give its driver and executors more memory (a larger "
            f"node type, spark.driver.memory, spark.executor.memory), or give the job fewer rows per batch; {_RERUN} "
            f"[{cause}]"
        )
    return JvmMemoryError(
        f"the Spark driver ran out of memory (a Java heap of {driver}, under {_under(limit)}): set "
        "DIABETES_SPARK_DRIVER_MEMORY higher within that limit, or give the process more memory, or give the job "
        f"fewer rows per batch; {_RERUN} [{cause}]"
    )
