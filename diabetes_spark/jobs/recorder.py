"""One job run's record: its steps as telemetry spans with a console line as each starts and ends,
its numbers to MLflow's run and to telemetry in one call. The jobs call it once per step, so their
bodies show the data path, not bookkeeping."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from diabetes_spark import errors, provenance
from diabetes_spark._version import __version__
from diabetes_spark.telemetry import COMPONENT_INGEST, COMPONENT_SCORE, COMPONENT_TRAIN
from diabetes_spark.telemetry import start as start_telemetry

if TYPE_CHECKING:
    from diabetes_spark.telemetry import Telemetry

#: The steps' start and end lines (``score: write ...``, ``score: write 38 rows ... 1.2 s``), console
#: only: the command line shows them at INFO unless ``--quiet``; telemetry has the step as a span.
PROGRESS = logging.getLogger("diabetes_spark.progress")
#: The command of each component, as its console lines name it.
#: The telemetry dimensions a notebook sets from its job, also tags of the MLflow run.
_JOB_DIMENSIONS = ("databricks_job_id", "databricks_run_id")
_COMMANDS = {COMPONENT_TRAIN: "train", COMPONENT_SCORE: "score", COMPONENT_INGEST: "ingest"}


class Recorder:
    """Steps, dimensions, metrics and tags of one job run; see :func:`recording`."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._tracking = False  # inside run(): numbers go to MLflow as well
        self._rows: int | None = None
        #: The inputs this run read (:meth:`input`), first read first.
        self.inputs: list[provenance.InputVersion] = []

    @contextmanager
    def step(self, name: str, *, about: str = "", **attributes: Any) -> Iterator[logging.Logger]:
        """Time the step ``name`` as a telemetry span; yields its logger. Its start and end (with the
        rows of :meth:`rows` and the seconds) go to :data:`PROGRESS`; a failure does not: the
        exception propagates and the caller reports it once. With ``about`` (``"input x"``), a
        foreign error a user can cause is raised as this package's, naming it (:func:`errors.about`)."""
        label = f"{_COMMANDS.get(self.telemetry.component, self.telemetry.component)}: {name}"
        PROGRESS.info("%s ...", label)
        self._rows, began = None, time.perf_counter()
        with self.telemetry.span(name, **attributes) as log, errors.about(about) if about else nullcontext():
            yield log
        counted = "" if self._rows is None else f" {self._rows:,} rows"
        PROGRESS.info("%s%s ... %.1f s", label, counted, time.perf_counter() - began)

    def log(self) -> logging.Logger:
        """The job's logger (its records go to the console and to telemetry)."""
        return self.telemetry.logger()

    def identify(self, **dimensions: str) -> None:
        """Dimensions of every later telemetry record (model, version, batch, MLflow ids)."""
        self.telemetry.set_dimensions(**dimensions)

    def record(self, metrics: Mapping[str, Any], *, rows: int | None = None) -> None:
        """``metrics`` to the MLflow run (inside :meth:`run`) and to telemetry; ``rows`` is what the
        current step handled, for its console line."""
        if self._tracking:
            import mlflow

            mlflow.log_metrics(dict(metrics))
        self.telemetry.record(metrics)
        if rows is not None:
            self.rows(rows)

    def rows(self, count: int) -> None:
        """The rows the current step handled, for its console line."""
        self._rows = int(count)

    def input(self, read: provenance.InputVersion, *, context: str) -> None:
        """An input the job read: a dataset of the MLflow run (inside :meth:`run`) and its tags."""
        self.inputs.append(read)
        if self._tracking:
            provenance.log_input(read, context=context)

    def params(self, values: Mapping[str, Any]) -> None:
        """More parameters of the MLflow run (what a step found: input width, tuned values)."""
        import mlflow

        mlflow.log_params(dict(values))

    def tag(self, **tags: str) -> None:
        """Tags of the MLflow run."""
        import mlflow

        mlflow.set_tags(tags)

    @contextmanager
    def run(
        self, experiment_id: str, name: str, *, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> Iterator[str]:
        """An MLflow run of ``experiment_id`` for the block, tagged and with ``params`` logged; yields its id.
        It ends FINISHED, or FAILED when the block raises."""
        import mlflow

        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
            self.identify(mlflow_run_id=run.info.run_id)
            # The Databricks job and run that ran it (the notebooks' widgets): lineage from a row's
            # mlflow_run_id to the job run.
            job = {k: v for k, v in self.telemetry.dimensions.items() if k in _JOB_DIMENSIONS}
            mlflow.set_tags({**tags, **job, "diabetes_spark_version": __version__})
            mlflow.log_params(dict(params))
            self._tracking = True
            try:
                yield run.info.run_id
            finally:
                self._tracking = False


@contextmanager
def recording(given: Telemetry | None, component: str, backend: str = "") -> Iterator[Recorder]:
    """A recorder over the caller's telemetry (the caller closes it), or over one started from the
    environment on ``backend`` (empty: the environment's) and closed here. Either way a failure is
    sent once, with its stack trace, and marks the run failed; one of the Spark JVM's (out of memory,
    died) is raised as the :class:`~diabetes_spark.errors.ConfigurationError` it is, so a notebook
    fails its run with the line the command line prints."""
    try:
        if given is None:
            with start_telemetry(component, backend=backend) as own:
                yield Recorder(own)
            return
        try:
            yield Recorder(given)
        except BaseException as error:
            given.fail(error)
            raise
    except Exception as error:  # an error of ours too: raised as the JVM ended, it is the JVM's
        from diabetes_spark.session import environment_error

        mapped = environment_error(error)
        if mapped is None:
            raise
        raise mapped from error
