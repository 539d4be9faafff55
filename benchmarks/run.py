"""Measure scoring against the Delta I/O floor, training, pandas + scikit-learn and spark_udf.

Everything runs in one process and one Spark session; each measurement is repeated and reported as
median (min-max). Ratios compare measurements of the same N in the same session.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.data import generate
from diabetes_spark import delta_writes, jobs, schemas, scoring, storage
from diabetes_spark.params import ScoreParams, TrainParams

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Series:
    """Repeated timings of one measurement at one N."""

    name: str
    n: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "seconds": self.seconds,
            "median": self.median,
            "min": min(self.seconds),
            "max": max(self.seconds),
        }


class PeakMemory:
    """Samples the RSS of this Python process and of the Spark JVM (its java child) every 50 ms."""

    def __init__(self) -> None:
        self.driver = 0
        self.jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, me.memory_info().rss)
                for child in me.children(recursive=True):
                    if "java" in child.name():
                        self.jvm = max(self.jvm, child.memory_info().rss)
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _timed(series: Series, reps: int, fn: Callable[[], Any]) -> Any:
    result = None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        series.seconds.append(time.perf_counter() - start)
    return result


#: The table layout scoring gives the predictions table it creates, for a floor table: partitioned by
#: batch, and no file statistics for the input columns (scoring keeps them for its own columns only).
SCORING_LAYOUT: dict[str, Any] = {
    "partition_by": scoring.BATCH_PARTITIONING,
    "table_properties": {"delta.dataSkippingNumIndexedCols": "0"},
}


def io_floor(spark: Any, source: str, target: str, *, layout: dict[str, Any] | None = None) -> None:
    """Read the input Delta table, add one literal column, write Delta the way scoring writes: into a
    plain Delta table, or one created with ``layout`` (:data:`SCORING_LAYOUT`)."""
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(source).withColumn("batch_id", F.lit("bench"))
    delta_writes.write_delta(
        df,
        storage.resolve(target),
        mode="overwrite",
        replace_where="batch_id = 'bench'",
        merge_schema=True,
        **(layout or {}),
    )


def _ridge(spark: Any) -> Any:
    """scikit-learn pipeline equivalent to the default Spark one, fitted on the sample."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    raw = storage.read_table(spark, storage.resolve("sample:diabetes.csv"))
    valid, _ = schemas.split_valid(raw, schemas.load_schema("training_raw"), required=("Y",), source="s", batch_id="b")
    train = valid.toPandas()
    return make_pipeline(
        make_column_transformer(
            (SimpleImputer(strategy="mean"), schemas.numeric_feature_names()),
            (OneHotEncoder(handle_unknown="ignore"), ["SEX"]),
        ),
        Ridge(alpha=1.0),
    ).fit(train[schemas.feature_names()], train["Y"])


def pandas_scoring(model: Any, source: str, target: str) -> None:
    """The same scoring in pandas + scikit-learn: read Parquet, impute, one-hot, predict, write Parquet."""
    import pandas as pd

    df = pd.read_parquet(source)
    df["prediction"] = model.predict(df[schemas.feature_names()])
    df.to_parquet(target, index=False)


def spark_udf_scoring(spark: Any, model_uri: str, source: str, target: str) -> None:
    """The common template way: ``mlflow.pyfunc.spark_udf`` over the registered model."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager="local")
    df = spark.read.format("delta").load(source)
    df.withColumn("prediction", udf(F.struct(*schemas.feature_names()))).write.mode("overwrite").parquet(target)


def count_jobs(spark: Any, fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` and count the Spark jobs it triggered."""
    sc = spark.sparkContext
    group = f"bench-{time.time_ns()}"
    sc.setJobGroup(group, group)
    try:
        result = fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return result, len(sc.statusTracker().getJobIdsForGroup(group))


_COLD_TIMER = "import json,time,sys; t0=time.perf_counter();"
_COLD_SESSION = (
    "from diabetes_spark.session import get_spark; from diabetes_spark import delta_writes, jobs, storage;"
    "from diabetes_spark.params import TrainParams, ScoreParams; from pathlib import Path;"
    "s=get_spark(); t1=time.perf_counter(); h=Path(sys.argv[1]);"
)
#: Train and score the sample, as the two scheduled jobs would.
_COLD_JOBS = (
    "jobs.run_training(s, TrainParams(training_data='sample:diabetes.csv', model_name='cold'), home=h); t2=time.perf_counter();"
    "jobs.run_batch_scoring(s, ScoreParams(input='sample:scoring_batch.csv', output=str(h/'p'), model_name='cold'), home=h);"
    "t3=time.perf_counter(); print(json.dumps({'session_start': t1-t0, 'train': t2-t1, 'score': t3-t2}))"
)
#: The same reads and writes with nothing else: the training sample read and written to Delta, read
#: back; the scoring sample read, one literal column added, written to Delta.
_COLD_IO = (
    "from pyspark.sql import functions as F;"
    "w=lambda df, p: delta_writes.write_delta(df, storage.resolve(str(h/p)), mode='overwrite');"
    "w(storage.read_table(s, storage.resolve('sample:diabetes.csv')), 't'); s.read.format('delta').load(str(h/'t')).count();"
    "t2=time.perf_counter();"
    "w(storage.read_table(s, storage.resolve('sample:scoring_batch.csv')).withColumn('batch_id', F.lit('b')), 'p');"
    "t3=time.perf_counter(); print(json.dumps({'session_start': t1-t0, 'train': t2-t1, 'score': t3-t2}))"
)


def cold_start(home: Path, *, io_only: bool = False, jvm_cache: bool = True) -> dict[str, float]:
    """Train and score the sample in a fresh process (session start included), as a Job would; with
    ``io_only``, the same reads and writes alone (the cold floor). ``jvm_cache=False`` starts the JVM
    without the class-data archive and the resolved jar list (``DIABETES_SPARK_JVM_CACHE=off``)."""
    code = _COLD_TIMER + _COLD_SESSION + (_COLD_IO if io_only else _COLD_JOBS)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "DIABETES_SPARK_HOME": str(home)}
    if not jvm_cache:
        env["DIABETES_SPARK_JVM_CACHE"] = "off"
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(home)], capture_output=True, text=True, check=True, env=env
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result


def _record_jvm_cache(home: Path) -> None:
    """Install what a first local run leaves behind: ingest the sample with the console script, which
    records the class-data archive and the jar list when they are not there yet (in the folder the
    cold starts use)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "diabetes_spark",
            "ingest",
            "--source",
            "sample:diabetes.csv",
            "--table",
            str(home / "raw"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def cold_starts(home: Path) -> dict[str, dict[str, float]]:
    """:func:`cold_start` once the first local run has recorded the JVM cache: in a new workspace
    (MLflow creates its SQLite store: ~40 schema migrations), then in a second fresh process on the
    same workspace, as a scheduled job's next run; the same without the JVM cache; and the cold
    floor, the same reads and writes alone in a fresh process."""
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    _record_jvm_cache(home / "first-run")
    results = {"new_workspace": cold_start(home / "a"), "existing_workspace": cold_start(home / "a")}
    results["existing_workspace_no_jvm_cache"] = cold_start(home / "a", jvm_cache=False)
    results["io_floor"] = cold_start(home / "io", io_only=True)
    return results


def run(
    sizes: list[int],
    *,
    reps: int,
    train_reps: int,
    pandas_max: int,
    udf_max: int,
    out: Path = OUT,
    on_size: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All measurements for every N; returns the results. ``on_size`` gets the results so far after
    each N (the caller writes them), so an interrupted run still reports the sizes it finished."""
    import shutil

    from diabetes_spark.session import get_spark

    out.mkdir(parents=True, exist_ok=True)
    home = out / "home"
    shutil.rmtree(home, ignore_errors=True)
    cold = cold_starts(out / "cold-home")
    spark = get_spark("diabetes-spark-benchmarks")
    ridge = _ridge(spark)
    series: list[Series] = []
    jobs_per_scoring: dict[int, int] = {}
    jobs_per_training: dict[int, int] = {}
    peaks: dict[str, dict[str, int]] = {}
    results: dict[str, Any] = {}
    for n in sizes:
        with PeakMemory() as memory:
            paths = generate(spark, n, out / "data")
            work = out / "work" / f"n={n}"
            shutil.rmtree(work, ignore_errors=True)
            floor = Series("io_floor", n)
            name = f"bench_{n}"
            train = Series("training", n)
            train_jobs: list[int] = []

            def train_once() -> dict[str, Any]:
                params = TrainParams(
                    training_data=paths["delta"], experiment="bench", model_name=name, max_reject_fraction=1.0
                )
                summary, count = count_jobs(spark, lambda: jobs.run_training(spark, params, home=home))
                train_jobs.append(count)
                return summary

            trained = _timed(train, train_reps, train_once)
            jobs_per_training[n] = train_jobs[0]
            score = Series("scoring", n)
            params = ScoreParams(
                input=paths["delta"],
                output=str(work / "scored"),
                model_name=name,
                batch_id="bench",
                experiment="bench",
                max_reject_fraction=1.0,
            )
            # The floor is also written into a table laid out like scoring's. Each gets one warm-up run
            # (which also creates its table), then they alternate, so all replace an earlier batch and
            # drifts of the machine touch them alike.
            floor_layout = Series("io_floor_scoring_layout", n)

            def plain_floor() -> None:
                io_floor(spark, paths["delta"], str(work / "floor"))

            def layout_floor() -> None:
                io_floor(spark, paths["delta"], str(work / "floor-layout"), layout=SCORING_LAYOUT)

            _, jobs_per_scoring[n] = count_jobs(spark, lambda: jobs.run_batch_scoring(spark, params, home=home))
            plain_floor()
            layout_floor()
            for _ in range(reps):
                _timed(floor, 1, plain_floor)
                _timed(score, 1, lambda: jobs.run_batch_scoring(spark, params, home=home))
                _timed(floor_layout, 1, layout_floor)
            series += [floor, train, score, floor_layout]
            if n <= pandas_max:
                pdser = Series("pandas_sklearn", n)
                _timed(pdser, reps, lambda: pandas_scoring(ridge, paths["parquet"], str(work / "pandas.parquet")))
                series.append(pdser)
            if n <= udf_max:
                udf = Series("spark_udf", n)
                uri = f"models:/{name}/{trained['model_version']}"
                _timed(udf, reps, lambda: spark_udf_scoring(spark, uri, paths["delta"], str(work / "udf")))
                series.append(udf)
            print(f"n={n:,}: " + ", ".join(f"{s.name} {s.median:.2f}s" for s in series if s.n == n), flush=True)
        peaks[str(n)] = {"driver_python": memory.driver, "jvm": memory.jvm}
        done = [m for m in sizes if str(m) in peaks]
        results = _results(series, done, jobs_per_scoring, jobs_per_training, peaks, cold, reps, train_reps)
        if on_size is not None:
            on_size(results)  # a long run keeps what it measured so far
    return results


def _results(
    series: list[Series],
    sizes: list[int],
    jobs_per_scoring: dict[int, int],
    jobs_per_training: dict[int, int],
    peaks: dict[str, dict[str, int]],
    cold: dict[str, dict[str, float]],
    reps: int,
    train_reps: int,
) -> dict[str, Any]:
    by = {(s.name, s.n): s.median for s in series}
    runs = {(s.name, s.n): s.seconds for s in series}
    ratios = {}
    for n in sizes:
        ratios[n] = {
            "scoring/io_floor": by[("scoring", n)] / by[("io_floor", n)],
            # the median of each repetition's scoring over the floor run just before it
            "scoring/io_floor paired": statistics.median(
                sc / fl for sc, fl in zip(runs[("scoring", n)], runs[("io_floor", n)], strict=True)
            ),
            **(
                {"scoring/io_floor_scoring_layout": by[("scoring", n)] / by[("io_floor_scoring_layout", n)]}
                if ("io_floor_scoring_layout", n) in by
                else {}
            ),
            **(
                {"pandas/scoring": by[("pandas_sklearn", n)] / by[("scoring", n)]}
                if ("pandas_sklearn", n) in by
                else {}
            ),
            **({"spark_udf/scoring": by[("spark_udf", n)] / by[("scoring", n)]} if ("spark_udf", n) in by else {}),
        }
    return {
        "series": [s.as_dict() for s in series],
        "ratios": {str(k): v for k, v in ratios.items()},
        "jobs_per_scoring_run": {str(k): v for k, v in jobs_per_scoring.items()},
        "jobs_per_training_run": {str(k): v for k, v in jobs_per_training.items()},
        "peak_memory_bytes": peaks,
        "cold_start_seconds": cold,
        "reps": reps,
        "train_reps": train_reps,
    }
