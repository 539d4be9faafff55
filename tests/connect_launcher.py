"""Test launcher of a local Spark Connect server: start it in the background, stop it (the wheel
ships only the command, :func:`diabetes_spark.connect_server.server_command`)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from diabetes_spark.connect_server import server_command, server_environment
from diabetes_spark.errors import ConfigurationError
from diabetes_spark.session import DEFAULT_PORT


def start(
    port: int = DEFAULT_PORT,
    *,
    conf: Mapping[str, str] | None = None,
    jars: Sequence[str] = (),
    master: str = "",
    delta: bool = True,
    log: Path | None = None,
    timeout: float = 300.0,
) -> subprocess.Popen:
    """Start a local Spark Connect server and return once it accepts connections.

    Raises:
        ConfigurationError: It exited, or did not listen within ``timeout`` seconds (its log says why).
    """
    command = server_command(port, conf=conf, jars=jars, master=master, delta=delta)
    output = log.open("ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=server_environment())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise ConfigurationError(f"the Spark Connect server on port {port} did not start; see {log or 'its output'}")


def stop(process: subprocess.Popen, *, timeout: float = 60.0) -> None:
    """Stop a server started by :func:`start` (its JVM shuts Spark down on SIGTERM)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
