"""A memory cgroup for one process tree, created and removed around a block: the hard cap a container
gives (v1 ``memory.limit_in_bytes`` or v2 ``memory.max``), the kernel's OOM killer included.

It is made a child of this process's own memory cgroup; a command is moved into it by
:meth:`MemoryCgroup.popen`, which writes the child's pid into ``cgroup.procs`` between fork and exec,
so the whole tree it starts (Python, the Spark JVM) is counted from its first byte. Creating one
needs root (or a delegated hierarchy): :func:`refusal` says why it cannot, for a test to skip on.
Shared by the tests and ``benchmarks/scale.py``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path("/sys/fs/cgroup")


def _own(version: int) -> Path | None:
    """This process's cgroup folder in the v1 memory hierarchy or the v2 one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if version == 1 and "memory" in controllers.split(","):
            return ROOT / "memory" / path.lstrip("/")
        if version == 2 and controllers == "" and (ROOT / "cgroup.controllers").exists():
            return ROOT / path.lstrip("/")
    return None


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class MemoryCgroup:
    """A cgroup capped at ``limit`` bytes (``None``: no cap, to measure a tree's peak alone)."""

    def __init__(self, limit: int | None, *, name: str = "diabetes-spark") -> None:
        v1 = _own(1)
        parent = v1 if v1 is not None and (v1 / "memory.limit_in_bytes").exists() else _own(2)
        if parent is None:
            raise OSError("no memory cgroup controller found under /sys/fs/cgroup")
        self.version = 1 if parent == v1 else 2
        self.path = parent / f"{name}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        self.limit = limit
        if limit is not None:
            self._write("memory.limit_in_bytes" if self.version == 1 else "memory.max", str(limit))
            if self.version == 1 and (self.path / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", str(limit))  # no swap to escape to
        self._sampling = False
        self.peak_anon = 0
        self.peak_rss: dict[str, int] = {}

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """``argv`` started inside the cgroup (``kwargs`` as for :class:`subprocess.Popen`)."""
        procs = str(self.path / "cgroup.procs")

        def enter() -> None:  # in the child, before exec: all it starts is counted
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        return subprocess.Popen(list(argv), preexec_fn=enter, **kwargs)

    def run(self, argv: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
        """``argv`` run to its end inside the cgroup, output captured as text."""
        with self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as process:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def pids(self) -> list[int]:
        """The processes in the cgroup now."""
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def peak(self) -> int:
        """The most the cgroup held at once, page cache included (an upper bound of what it needed)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return int((self.path / name).read_text())

    def anon(self) -> int:
        """Anonymous memory (heaps, stacks) plus mapped files now: what the kernel cannot drop as cache."""
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        if self.version == 1:
            return int(stat["total_rss"]) + int(stat["total_mapped_file"])
        return int(stat["anon"]) + int(stat["file_mapped"])

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in the cgroup (v2; v1 reports under_oom only)."""
        if self.version == 2:
            events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
            return int(events.get("oom_kill", 0))
        oom = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
        return int(oom.get("oom_kill", 0))

    def java_argv(self) -> list[str]:
        """The command line of the Spark JVM in the cgroup (not spark-submit's short-lived launcher), or ``[]``."""
        for pid in self.pids():
            argv = _argv(pid)
            launcher = "org.apache.spark.launcher.Main" in argv
            if argv and argv[0].endswith("java") and "org.apache.spark.deploy.SparkSubmit" in argv and not launcher:
                return argv
        return []

    def rss(self) -> dict[str, int]:
        """Resident memory now, summed by program: ``java`` (the Spark JVM) and ``python``."""
        totals: dict[str, int] = {}
        for pid in self.pids():
            argv = _argv(pid)
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
            name = "java" if argv and argv[0].endswith("java") else "python"
            totals[name] = totals.get(name, 0) + kb * 1024
        return totals

    @contextmanager
    def sampling(self, every: float = 0.2) -> Iterator[None]:
        """:attr:`peak_anon` kept up to date by a thread for the block."""
        self._sampling = True

        def sample() -> None:
            while self._sampling:
                try:
                    self.peak_anon = max(self.peak_anon, self.anon())
                    for name, value in self.rss().items():
                        self.peak_rss[name] = max(self.peak_rss.get(name, 0), value)
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(every)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._sampling = False
            thread.join()

    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup."""
        for pid in self.pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        """Kill what is left and remove the cgroup."""
        for _ in range(50):
            self.kill_all()
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        self.path.rmdir()


@contextmanager
def memory_cgroup(limit: int | None, *, name: str = "diabetes-spark") -> Iterator[MemoryCgroup]:
    """A :class:`MemoryCgroup` for the block, removed after it."""
    group = MemoryCgroup(limit, name=name)
    try:
        yield group
    finally:
        group.remove()


def refusal() -> str | None:
    """Why no memory cgroup can be created here (the OS error), or ``None`` when one can."""
    try:
        MemoryCgroup(None, name="probe").remove()
    except OSError as e:
        return f"cannot create a memory cgroup under {ROOT}: {e}"
    return None
