"""A Spark standalone cluster (one master, N workers) on 127.0.0.1, started from the installed pyspark.

Local mode runs driver and tasks in one JVM, so it cannot catch code that only works on the driver
(a file path only the driver sees, an object that does not serialise, jars missing on executors).
A standalone cluster on this machine has separate executor JVMs, as Databricks has, at the cost of
a few seconds' start-up. The processes are children of the caller and are always stopped by
:meth:`StandaloneCluster.stop` (terminate, then kill their whole process group).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

__all__ = ["StandaloneCluster", "free_port", "spark_home", "cluster_env", "signal_group", "SHORT_LIVED_JVM"]


#: JVM options for short runs on few cores: the C1 compiler only and the serial collector. A fresh
#: JVM otherwise spends much of a short test compiling with C2 and running parallel GC threads.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_home() -> Path:
    """The pip-installed pyspark package folder, which is a complete Spark distribution."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def cluster_env() -> dict[str, str]:
    """Environment for the cluster daemons and the driver: loopback only, this interpreter for Python.

    Executors inherit the worker's environment, so ``PYTHONPATH`` (this source tree) reaches their
    Python workers as it would with the wheel installed on every Databricks node.
    """
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_MASTER_HOST": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_DAEMON_MEMORY": "256m",
        "SPARK_DAEMON_JAVA_OPTS": SHORT_LIVED_JVM,
        # The master's REST submission server would take the fixed port 6066: not needed here.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }


class StandaloneCluster:
    """One master and ``workers`` workers (1 core, ``worker_memory`` each) on 127.0.0.1.

    Args:
        root: Folder for the workers' work dirs (executor logs, fetched jars) and daemon logs.
        workers: Number of workers.
        worker_memory: Memory each worker offers to executors (``1g``).
    """

    def __init__(self, root: Path, *, workers: int = 2, worker_memory: str = "1g") -> None:
        self.root = root
        self.workers = workers
        self.worker_memory = worker_memory
        self.port = free_port()
        self.webui_port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self._logs: list[IO[bytes]] = []
        self.startup_seconds: float | None = None

    def work_dir(self, index: int) -> Path:
        """The work dir of worker ``index``: one sub-folder per application and executor."""
        return self.root / f"worker-{index}"

    @property
    def log_files(self) -> list[Path]:
        """The daemons' combined stdout/stderr files (master first)."""
        return [self.root / "master.log", *(self.root / f"worker-{i}.log" for i in range(self.workers))]

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        command = [str(spark_home() / "bin" / "spark-class"), *args]
        # A session of its own: stop() can signal the daemon and every executor it launched at once.
        self.processes.append(
            subprocess.Popen(command, env=cluster_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def master_state(self) -> dict:
        """The master's JSON status (workers, their state, applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        """How many workers the master sees ALIVE (0 while the master is not answering)."""
        try:
            return sum(1 for w in self.master_state().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def start(self, timeout: float = 90.0) -> StandaloneCluster:
        """Start the master and the workers and wait until every worker is ALIVE.

        Raises:
            RuntimeError: A daemon exited or the workers were not ALIVE within ``timeout`` seconds;
                the message carries the tail of the daemon logs.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        master = "org.apache.spark.deploy.master.Master"
        self._spawn(
            "master", master, "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui_port)
        )
        for i in range(self.workers):
            self.work_dir(i).mkdir(parents=True, exist_ok=True)
            self._spawn(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host", "127.0.0.1",
                "--cores", "1",
                "--memory", self.worker_memory,
                "--webui-port", str(free_port()),
                "--work-dir", str(self.work_dir(i)),
                self.url,
            )  # fmt: skip
        while self.alive_workers() < self.workers:
            exited = [p.args[1] for p in self.processes if p.poll() is not None]
            if exited or time.monotonic() - began > timeout:
                self.stop()
                why = (
                    f"{', '.join(exited)} exited" if exited else f"not {self.workers} ALIVE workers after {timeout:g} s"
                )
                raise RuntimeError(f"standalone cluster did not start: {why}\n{self.log_tail()}")
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - began
        return self

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for path in self.log_files:
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every daemon and its executors: SIGTERM to each process group, SIGKILL after ``grace``."""
        for process in reversed(self.processes):
            signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(process, signal.SIGKILL)  # also executors a terminated worker left behind
            process.wait()
        for log in self._logs:
            log.close()
        self.processes.clear()
        self._logs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Signal the process group of ``process``, started with ``start_new_session=True`` so that it
    leads its own group (a group already gone: nothing to do)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
