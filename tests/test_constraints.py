"""The runtime matrix's constraints files hold the runtimes' own versions, copied from the cited source.

``constraints/upstream/<leg>.txt`` is the verbatim excerpt of the source (``databricks/environments``,
path and commit on its first line); ``constraints/<leg>.txt`` must be what ``tests/make_constraints.py
write`` makes of it, its deviations in one marked block with a reason each.
"""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement
from setuptools import distutils  # type: ignore[attr-defined]

from tests import make_constraints as mc
from tests import runtimes

LEGS = sorted(mc.SOURCES)


def test_every_leg_of_the_matrix_has_a_source_and_a_constraints_file() -> None:
    assert sorted(runtimes.leg_name(r) for r in runtimes.RUNTIMES) == LEGS
    assert sorted(p.stem for p in mc.CONSTRAINTS.glob("*.txt")) == LEGS
    assert sorted(p.stem for p in (mc.CONSTRAINTS / "upstream").glob("*.txt")) == LEGS


@pytest.mark.parametrize("leg", LEGS)
def test_the_header_cites_the_excerpts_source(leg: str) -> None:
    source, _ = mc.read_excerpt(leg)
    assert source == f"# source: {mc.REPOSITORY} {mc.SOURCES[leg]} @ " + source.rsplit(" @ ", 1)[1]
    assert source in mc.Leg.read(leg).head.splitlines()


@pytest.mark.parametrize("leg", LEGS)
def test_the_pins_are_the_excerpts_values(leg: str) -> None:
    current = mc.Leg.read(leg)
    assert current.table == mc.render_table(leg, current.head), "run: python tests/make_constraints.py write"
    # The same, said without the generator: every excerpt line is pinned at its version, or decided in the block.
    _, table = mc.read_excerpt(leg)
    pins, deviations = mc.parse_pins(current.table), current.deviations()
    for name, version in table.items():
        assert pins.get(name) == f"=={version}" or name in deviations, (leg, name, version)
    assert set(pins) <= set(table), f"{leg}: pins that are not in the excerpt: {set(pins) - set(table)}"


@pytest.mark.parametrize("leg", LEGS)
def test_deviations_are_one_block_and_each_gives_its_reason(leg: str) -> None:
    current = mc.Leg.read(leg)
    text = current.head + current.table
    assert text.count(mc.BLOCK_START) == text.count(mc.BLOCK_END) == 1
    # Outside the block, nothing but the generated table pins anything.
    assert mc.parse_pins(current.head[: current.head.index(mc.BLOCK_START)]) == {}
    lines = current.block.splitlines()[1:-1]
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            reasons = [x for x in lines[:i] if x.startswith("# - ")]
            named = [{mc.normalise(w) for w in re.findall(r"[\w.-]+", r)} for r in reasons]
            assert any(mc.parse_pins(line).keys() <= words for words in named), (leg, line)
    assert "pyspark" in mc.parse_pins(current.block), "the source never lists pyspark: the block must pin it"


@pytest.mark.parametrize("leg", LEGS)
def test_the_excerpt_is_verbatim_source_lines_with_the_wanted_packages(leg: str) -> None:
    text = mc.excerpt_path(leg).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == sorted(lines, key=lambda line: mc.normalise(line.split("~=")[0]))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*~=[0-9][0-9a-z.]*", line) for line in lines)
    _, table = mc.read_excerpt(leg)
    absent = re.search(r"^# not in the table: (.*)$", text, re.M)
    said_absent = set(absent.group(1).split(", ")) if absent else set()
    # Every package the wheel's telemetry could move is pinned wherever the runtime ships it.
    assert set(mc.WANTED) == (set(mc.WANTED) & set(table)) | said_absent
    assert not set(mc.TOOLS) & set(table)


def test_the_runtimes_azure_identity_is_the_release_notes_one() -> None:
    """The facts that made the matrix pin azure-identity: the versions the runtimes ship."""
    shipped = {leg: mc.read_excerpt(leg)[1].get("azure-identity") for leg in LEGS}
    assert shipped == {
        "dbr-15.4": "1.17.1",
        "dbr-16.4": "1.21.0",
        "dbr-17.3": "1.20.0",
        "dbr-18": "1.20.0",
        "serverless-5": "1.20.0",
    }


def test_write_keeps_the_head_and_rebuilds_the_table(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mc, "CONSTRAINTS", tmp_path)
    (tmp_path / "upstream").mkdir()
    source = "# source: databricks/environments python/x/constraints.txt @ " + "0" * 40
    (tmp_path / "upstream" / "dbr-18.txt").write_text(f"{source}\nazure-core~=1.36.0\nmlflow-skinny~=3.8.1\n")
    head = f"{source}\n# >>> deviations\n# - mlflow-skinny: why\n# not installed: mlflow-skinny\n# <<< deviations\n"
    (tmp_path / "dbr-18.txt").write_text(head + "stale==1\n")
    monkeypatch.setattr(mc, "SOURCES", {"dbr-18": "python/x/constraints.txt"})
    mc.write()
    assert (tmp_path / "dbr-18.txt").read_text() == head + mc.GENERATED.format(leg="dbr-18") + "\nazure-core==1.36.0\n"


def test_no_requirement_of_the_wheel_excludes_a_runtimes_own_version() -> None:
    """A bound below what a runtime ships makes ``%pip install`` replace the runtime's package (the
    matrix catches it too, minutes later; this says which bound, at once)."""
    setup = distutils.core.run_setup(str(mc.ROOT / "setup.py"), stop_after="init")
    requirements = [Requirement(r) for r in setup.install_requires]
    for leg in LEGS:
        _, table = mc.read_excerpt(leg)
        for req in requirements:
            shipped = table.get(mc.normalise(req.name))
            assert shipped is None or req.specifier.contains(shipped, prereleases=True), (leg, str(req), shipped)
