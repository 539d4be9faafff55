"""Write the runtime matrix's constraints files from the runtimes' own library tables, copied, not typed.

The tables come from the GitHub repository ``databricks/environments``: per runtime a ``constraints.txt``
of ``name~=version`` lines, a mechanical transform of the Databricks release notes' "Installed Python
libraries" tables. Two steps, each a command:

``excerpt``
    From a copy of one upstream ``constraints.txt``, keep the lines of the packages a leg installs (the
    names of one or more ``pip freeze`` files of the leg's virtualenv, plus :data:`WANTED`), verbatim,
    in ``constraints/upstream/<leg>.txt`` under a line naming the repository, the path and the commit.
    Names already in the excerpt stay, so running it again after a leg only adds.
``write``
    Rewrite the pins at the end of each ``constraints/<leg>.txt`` from its excerpt (``~=v`` becomes
    ``==v``: the runtime ships exactly that release). The file's header and its one block of
    deviations are kept as they are; a package the block pins or marks ``not installed`` is left out.

    python tests/make_constraints.py excerpt dbr-18 ~/constraints.txt --commit dd82b18... \\
        --freeze .venvs/dbr-18/installed-freeze.txt
    python tests/make_constraints.py write

``tests/test_constraints.py`` checks that the files are what ``write`` makes of the excerpts.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints"
REPOSITORY = "databricks/environments"

#: Each leg's table in the repository (the CPU ML image of each LTS runtime; serverless environment 5).
SOURCES = {
    "dbr-15.4": "python/dbr/15.4.x-cpu-ml-scala2.12/constraints.txt",
    "dbr-16.4": "python/dbr/16.4.x-cpu-ml-scala2.12/constraints.txt",
    "dbr-17.3": "python/dbr/17.3.x-cpu-ml-scala2.13/constraints.txt",
    "dbr-18": "python/dbr/18.x-cpu-ml-scala2.13/constraints.txt",
    "serverless-5": "python/serverless/serverless-v5/constraints.txt",
}
#: Excerpted wherever the runtime has them, installed by the leg or not: what the wheel's telemetry
#: brings or could move (opencensus-ext-azure's dependencies, MLflow's OpenTelemetry), and the test runner.
WANTED = (
    "azure-core",
    "azure-identity",
    "msal",
    "msal-extensions",
    "opencensus",
    "opencensus-context",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "psutil",
    "pytest",
)
#: The virtualenv's own tools: never excerpted (the runtime's pip and setuptools are not the wheel's concern).
TOOLS = ("pip", "setuptools", "wheel")
SOURCE_LINE = re.compile(r"^# source: (?P<repo>\S+) (?P<path>\S+) @ (?P<commit>[0-9a-f]{40})$", re.M)
BLOCK_START, BLOCK_END = "# >>> deviations", "# <<< deviations"
GENERATED = "# The runtime's table, written by tests/make_constraints.py from constraints/upstream/{leg}.txt:"
NOT_INSTALLED = re.compile(r"^# not installed: (\S+)", re.M)


def normalise(name: str) -> str:
    """A distribution name as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_table(text: str) -> dict[str, str]:
    """``name~=version`` lines: normalised name -> version (comments and blank lines skipped)."""
    table = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("~=")
            if not sep:
                raise ValueError(f"expected name~=version, found {line!r}")
            table[normalise(name)] = version
    return table


def parse_pins(text: str) -> dict[str, str]:
    """Requirement lines: normalised name -> the specifier after the name."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
            assert name, line
            pins[normalise(name.group())] = line[name.end() :].strip()
    return pins


@dataclass
class Leg:
    """One leg's constraints file, split where ``write`` splits it."""

    name: str
    head: str  # everything up to and including the deviation block's end line
    table: str  # the generated pins

    @classmethod
    def read(cls, name: str) -> Leg:
        text = (CONSTRAINTS / f"{name}.txt").read_text(encoding="utf-8")
        end = text.index(BLOCK_END)
        end = text.index("\n", end) + 1
        return cls(name, text[:end], text[end:])

    @property
    def block(self) -> str:
        return self.head[self.head.index(BLOCK_START) :]

    def deviations(self) -> set[str]:
        """The packages the deviation block pins or leaves out."""
        return set(parse_pins(self.block)) | {normalise(n) for n in NOT_INSTALLED.findall(self.block)}


def excerpt_path(leg: str) -> Path:
    return CONSTRAINTS / "upstream" / f"{leg}.txt"


def read_excerpt(leg: str) -> tuple[str, dict[str, str]]:
    """The excerpt's source line and its table."""
    text = excerpt_path(leg).read_text(encoding="utf-8")
    source = SOURCE_LINE.search(text)
    if not source:
        raise ValueError(f"{excerpt_path(leg)}: no '# source: <repo> <path> @ <commit>' line")
    return source.group(), parse_table(text)


def render_table(leg: str, head: str) -> str:
    """The pins ``write`` puts after ``head``: the excerpt's, less what the deviation block decides."""
    _, table = read_excerpt(leg)
    skip = Leg(leg, head, "").deviations()
    pins = "".join(f"{name}=={version}\n" for name, version in sorted(table.items()) if name not in skip)
    return GENERATED.format(leg=leg) + "\n" + pins


def write() -> None:
    for leg in SOURCES:
        current = Leg.read(leg)
        (CONSTRAINTS / f"{leg}.txt").write_text(current.head + render_table(leg, current.head), encoding="utf-8")


def excerpt(leg: str, upstream: Path, commit: str, freezes: list[Path]) -> None:
    upstream_lines = upstream.read_text(encoding="utf-8").splitlines()
    table = parse_table("\n".join(upstream_lines))
    wanted = set(WANTED)
    for freeze in freezes:
        wanted |= {normalise(line.split("==")[0]) for line in freeze.read_text().split()}
    if excerpt_path(leg).is_file():
        wanted |= set(read_excerpt(leg)[1])
    wanted -= set(TOOLS)
    kept = [line for line in upstream_lines if line.strip() and normalise(line.split("~=")[0]) in wanted]
    absent = sorted(n for n in WANTED if n not in table)
    lines = [
        f"# source: {REPOSITORY} {SOURCES[leg]} @ {commit}",
        f"# Its lines for the packages the {leg} leg installs, copied by tests/make_constraints.py excerpt.",
        *([f"# not in the table: {', '.join(absent)}"] if absent else []),
        *kept,
    ]
    excerpt_path(leg).parent.mkdir(exist_ok=True)
    excerpt_path(leg).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cut = sub.add_parser("excerpt", help="keep a leg's lines of a copy of its upstream constraints.txt")
    cut.add_argument("leg", choices=sorted(SOURCES))
    cut.add_argument("upstream", type=Path, help=f"a copy of {REPOSITORY}'s file for the leg, at --commit")
    cut.add_argument("--commit", required=True, help="the commit the copy was taken at (40 hex digits)")
    cut.add_argument("--freeze", type=Path, action="append", default=[], help="a pip freeze of the leg (repeatable)")
    sub.add_parser("write", help="rewrite the pins of constraints/<leg>.txt from the excerpts")
    args = parser.parse_args(argv)
    if args.command == "excerpt":
        if not re.fullmatch(r"[0-9a-f]{40}", args.commit):
            parser.error("--commit takes the 40 hex digits of a commit")
        excerpt(args.leg, args.upstream, args.commit, args.freeze)
    else:
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
