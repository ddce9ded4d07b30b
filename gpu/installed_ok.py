"""After the offline install: do the installed versions satisfy what Cairn's agent needs?

``gpu/run.sh`` installs the carried wheels with ``--no-deps``: letting pip resolve would make
it re-check the whole image (torch's own pins on its CUDA libraries, which other packages of
the image may have moved) and fail offline over packages Cairn never touches. So this checks
exactly Cairn's agent requirements (less torch's pin, which names the CPU wheel of the
development machine) and, recursively, the requirements of the carried packages, against
what is installed. Prints each problem and exits 1 if there is one.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpu.verify_wheels import ROOT, agent_requirements


def carried_requirements() -> list[str]:
    lines = (ROOT / "gpu" / "requirements.txt").read_text().splitlines()
    return [text for line in lines if (text := line.split("#", 1)[0].strip())]


def problems(roots: list[str], carried: set[str]) -> list[str]:
    """Unmet requirements among ``roots`` and the requirements of ``carried`` packages."""
    found: list[str] = []
    pending, seen = list(roots), set()
    while pending:
        requirement = Requirement(pending.pop())
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            found.append(f"{requirement} is not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            found.append(f"{requirement} is not met: {name} {installed} is installed")
        if name in carried and name not in seen:
            seen.add(name)
            pending.extend(requires(name) or [])
    return found


def main() -> int:
    roots = agent_requirements() + carried_requirements()
    carried = {str(canonicalize_name(Requirement(r).name)) for r in carried_requirements()}
    unmet = problems(roots, carried)
    for line in unmet:
        print(f"installed_ok: {line}")
    where = Path(__file__).resolve().parent.parent
    print(f"installed_ok: {len(unmet)} unmet requirement(s) of Cairn's agent ({where})")
    return 1 if unmet else 0


if __name__ == "__main__":
    raise SystemExit(main())
