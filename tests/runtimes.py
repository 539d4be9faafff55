"""The runtime matrix: install the wheel the way a job does on a Databricks ML runtime or serverless
environment, then run the core tests there.

For each runtime named (``15.4``, ``16.4``, ``17.3``, ``18``: the LTS ML runtimes; ``serverless-5``: serverless
environment 5), in ``.venvs/<leg>`` (``dbr-<runtime>`` or ``serverless-5``), with the leg's Python
(:data:`PYTHONS`; the machine's where it lacks the runtime's):

1. the runtime's own packages, ``pip install -r constraints/<leg>.txt``, and their ``pip freeze``;
2. the wheel, the way ``%pip install`` does it: with its dependencies and no constraints;
3. the check: no package of step 1 moved, and ``pip check`` is clean;
4. the test tools, constrained to what is installed (so they cannot move a runtime package either);
5. the core tests (ingest, train, registry, score, notebooks): :data:`CORE_TESTS`.

Steps 1 and 4 are kept between runs (a stamp holds the constraints file's digest); a failed check
throws the virtualenv away, since the wheel's install may have moved a package. The tests import the
package from the source tree beside them; the installed wheel is imported from elsewhere by a smoke
call of its console script.

    python tests/runtimes.py 15.4 18          # or: make test-runtime RUNTIME=15.4, make test-runtimes

``constraints/<leg>.txt`` are written by ``tests/make_constraints.py`` from the runtimes' own tables.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ("15.4", "16.4", "17.3", "18", "serverless-5")
#: The Python minor a leg runs on where the machine has it (the runtime's); the others run on this interpreter's.
#: DBR 16.4 to 18 have Python 3.12 too, but pandas 1.5.3 (16.4) has no 3.12 wheel; see docs/runtimes.md.
PYTHONS = {"serverless-5": "3.12"}

#: The core tests: ingest, train and registry (train job: register, aliases, promotion), score, notebooks,
#: and the validation's verdicts against the runtime's own MLflow.
CORE_TESTS = (
    "tests/test_ingest.py",
    "tests/test_features_training.py",
    "tests/test_train_job.py",
    "tests/test_scoring.py",
    "tests/test_notebooks.py",
    "tests/test_thresholds.py",
)
#: Not on a runtime: it installs the wheel with the ``local`` extra (Spark 4.1) into a virtualenv of its own.
DESELECTED = ("tests/test_notebooks.py::test_training_notebook_runs_against_the_installed_wheel",)
#: The test extra's tools the core tests use; scikit-learn comes with the ML runtime.
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.3", "chispa>=0.10")
PHASES = ("runtime packages", "wheel", "test tools", "core tests")


@dataclass
class Leg:
    """One runtime's run: timings by phase, the test summary, what went wrong."""

    runtime: str
    python: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    failure: str = ""


#: Not passed on to a leg's interpreter: the runner's PYTHONPATH would show pip the source tree's
#: diabetes_spark.egg-info (left by building the wheel) as an installed distribution.
_NOT_PASSED = ("PYSPARK_PYTHON", "SPARK_HOME", "VIRTUAL_ENV", "PYTHONPATH")


def _leg_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _NOT_PASSED}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, text=True, env=_leg_env(), **kwargs)


def _pip(venv: Path, *args: str) -> None:
    result = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True
    )
    if result.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")


def _freeze(venv: Path) -> dict[str, str]:
    """Installed distributions, normalised name -> version (direct URL installs keep their URL)."""
    out = _run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True).stdout
    frozen = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if not sep:
            name, _, version = line.partition(" @ ")
        frozen[re.sub(r"[-_.]+", "-", name).lower().strip()] = version.strip()
    return frozen


def _write_freeze(path: Path, frozen: dict[str, str]) -> None:
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(frozen.items()) if "://" not in v), encoding="utf-8")


def _read_freeze(path: Path) -> dict[str, str]:
    return dict(line.split("==", 1) for line in path.read_text(encoding="utf-8").split())


def moved_packages(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The packages of ``before`` that ``after`` has at another version, or not at all."""
    return [f"{n} {v} -> {after.get(n, 'removed')}" for n, v in sorted(before.items()) if after.get(n) != v]


def build_wheel(out: Path) -> Path:
    """The project's wheel, built with this interpreter's ``build`` (no isolation: nothing downloaded)."""
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)]
    result = _run(cmd, capture_output=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"building the wheel failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    (wheel,) = out.glob("diabetes_spark-*.whl")
    return wheel


def leg_name(runtime: str) -> str:
    """The leg's name: its constraints file (``constraints/<leg>.txt``) and virtualenv (``.venvs/<leg>``)."""
    return runtime if runtime.startswith("serverless-") else f"dbr-{runtime}"


def interpreter(runtime: str) -> str:
    """The Python the leg's virtualenv is made with: the runtime's minor where found, else this one."""
    minor = PYTHONS.get(runtime)
    if minor:
        pyenv = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}"))
        found = shutil.which(f"python{minor}")
        for candidate in [*(str(p) for p in pyenv), *([found] if found else [])]:
            if _run([candidate, "-c", "import venv"], capture_output=True).returncode == 0:
                return candidate
        print(f"--- {leg_name(runtime)}: no Python {minor} here, running on {sys.version.split()[0]}", flush=True)
    return sys.executable


def _digest(path: Path, python: str) -> str:
    return hashlib.sha256(path.read_bytes() + python.encode()).hexdigest()


def install_runtime(runtime: str, venv: Path, *, fresh: bool) -> dict[str, str]:
    """The runtime's own packages in ``venv`` (kept while the constraints file is unchanged); their freeze."""
    constraints, python = ROOT / "constraints" / f"{leg_name(runtime)}.txt", interpreter(runtime)
    stamp, frozen = venv / "constraints.sha256", venv / "runtime-freeze.txt"
    if not fresh and stamp.is_file() and stamp.read_text() == _digest(constraints, python) and frozen.is_file():
        return _read_freeze(frozen)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, env=_leg_env())
    _pip(venv, "install", "--quiet", "--upgrade", "pip")
    _pip(venv, "install", "--quiet", "-r", str(constraints))
    _pip(venv, "check")
    runtime_freeze = _freeze(venv)
    _write_freeze(frozen, runtime_freeze)
    stamp.write_text(_digest(constraints, python))
    return runtime_freeze


def install_wheel(venv: Path, wheel: Path, runtime_freeze: dict[str, str]) -> None:
    """The wheel as ``%pip install`` puts it on a cluster; fails when a runtime package moved."""
    _pip(venv, "uninstall", "--quiet", "--yes", "diabetes_spark")
    _pip(venv, "install", "--quiet", str(wheel))
    moved = moved_packages(runtime_freeze, _freeze(venv))
    if moved:
        raise RuntimeError("installing the wheel moved runtime packages:\n  " + "\n  ".join(moved))
    _pip(venv, "check")
    # The installed wheel, imported away from the source tree: its console script on this runtime.
    with tempfile.TemporaryDirectory() as elsewhere:
        smoke = _run([str(venv / "bin" / "diabetes-spark"), "--help"], capture_output=True, cwd=elsewhere)
    if smoke.returncode:
        raise RuntimeError(f"the installed wheel's console script fails:\n{smoke.stderr[-4000:]}")


def install_test_tools(venv: Path, runtime_freeze: dict[str, str]) -> None:
    """pytest and chispa, constrained to every version installed now (kept between runs)."""
    stamp = venv / "tools-installed"
    if not stamp.is_file():
        pinned = venv / "installed-freeze.txt"
        _write_freeze(pinned, _freeze(venv))
        _pip(venv, "install", "--quiet", "-c", str(pinned), *TEST_TOOLS)
        stamp.touch()
    moved = moved_packages(runtime_freeze, _freeze(venv))
    if moved:
        raise RuntimeError("installing the test tools moved runtime packages:\n  " + "\n  ".join(moved))


def run_core_tests(venv: Path, pytest_args: list[str]) -> tuple[int, str]:
    """The core tests with the runtime's interpreter; pytest's exit code and its closing line."""
    deselect = [arg for test in DESELECTED for arg in ("--deselect", test)]
    cmd = [str(venv / "bin" / "python"), "-m", "pytest", *CORE_TESTS, *deselect, "-q", "-ra", *pytest_args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_leg_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if re.search(r"\d+ (passed|failed|error)", line):
            last = line.strip().strip("=").strip()
    return proc.wait(), last


def run_leg(runtime: str, wheel: Path, *, fresh: bool, pytest_args: list[str]) -> Leg:
    """One runtime, from its packages to its core tests."""
    leg, venv = Leg(runtime), ROOT / ".venvs" / leg_name(runtime)
    phase, start = "runtime packages", time.monotonic()
    try:
        runtime_freeze = install_runtime(runtime, venv, fresh=fresh)
        leg.python = re.findall(r"^version(?:_info)? = (\S+)", (venv / "pyvenv.cfg").read_text(), re.M)[0]
        leg.timings[phase], phase, start = time.monotonic() - start, "wheel", time.monotonic()
        install_wheel(venv, wheel, runtime_freeze)
        leg.timings[phase], phase, start = time.monotonic() - start, "test tools", time.monotonic()
        install_test_tools(venv, runtime_freeze)
        leg.timings[phase], phase, start = time.monotonic() - start, "core tests", time.monotonic()
        print(f"--- {leg_name(runtime)}: core tests", flush=True)
        code, leg.summary = run_core_tests(venv, pytest_args)
        leg.timings[phase] = time.monotonic() - start
        if code:
            leg.failure = f"core tests failed (pytest exit code {code})"
    except RuntimeError as e:
        leg.timings[phase] = time.monotonic() - start
        leg.failure = f"{phase}: {e}"
        if phase != "core tests":
            # The install may have moved packages: the next run starts from a fresh virtualenv.
            (venv / "constraints.sha256").unlink(missing_ok=True)
    return leg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("runtimes", nargs="*", default=list(RUNTIMES), help=f"of {', '.join(RUNTIMES)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the virtualenvs from nothing")
    parser.add_argument("--wheel", type=Path, help="the wheel to install (default: build one)")
    args, pytest_args = parser.parse_known_args(argv)
    unknown = sorted(set(args.runtimes) - set(RUNTIMES))
    if unknown:
        parser.error(f"unknown runtime {', '.join(unknown)}; expected one of {', '.join(RUNTIMES)}")
    with tempfile.TemporaryDirectory() as out:
        wheel = args.wheel or build_wheel(Path(out))
        legs = [run_leg(r, wheel, fresh=args.fresh, pytest_args=pytest_args) for r in args.runtimes]
    print(f"\n{'leg':<13}{'python':<8}" + "  ".join(f"{p:>16}" for p in PHASES))
    for leg in legs:
        times = "  ".join(f"{leg.timings[p]:>15.0f}s" if p in leg.timings else f"{'-':>16}" for p in PHASES)
        print(f"{leg_name(leg.runtime):<13}{leg.python:<8}{times}  {leg.summary or ''}")
    for leg in legs:
        if leg.failure:
            print(f"\n{leg_name(leg.runtime)} FAILED: {leg.failure}", file=sys.stderr)
    return 1 if any(leg.failure for leg in legs) else 0


if __name__ == "__main__":
    sys.exit(main())
