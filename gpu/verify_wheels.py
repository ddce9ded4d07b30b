"""Verify ``gpu/wheels``: small enough to travel, no package twice, and complete.

Complete means: pip, offline and binary-only, for CPython 3.12 on manylinux x86-64, resolves
Cairn's agent requirements (``pyproject.toml``'s ``agent`` extra and the base requirements the
agent imports, less torch's pin) and ``gpu/requirements.txt`` from ``gpu/wheels`` plus
stand-ins for the image's packages, and needs nothing else. The stand-ins are metadata-only
wheels built here from ``gpu/image.txt`` (the version read off the machine, or the least one
the carried wheels accept; see that file). Every carried wheel must be used.

Usage: ``python -m gpu.verify_wheels --platform TAG [--platform TAG ...]`` (fetch_wheels.sh).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "gpu" / "wheels"
MIB = 1 << 20
WHEELS_LIMIT_MIB = 48
"""The device tool carries 64 MiB, the working tree included; leave room for the tree."""
OPERATOR_ONLY = frozenset({"kopf", "prometheus-client"})
"""Base requirements (``[project].dependencies``) only the operator imports; the agent needs the
rest (a new base requirement counts as the agent's until it is named here)."""


def agent_requirements() -> list[str]:
    """Cairn's agent requirements as pyproject.toml states them, less torch."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [r for r in project["dependencies"] if _name(r) not in OPERATOR_ONLY]
    agent = [r for r in project["optional-dependencies"]["agent"] if _name(r) != "torch"]
    return base + agent


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def image_pins() -> dict[str, str]:
    """Name -> version of each stand-in (``==`` read off the image, ``>=`` its least)."""
    pins: dict[str, str] = {}
    for line in (ROOT / "gpu" / "image.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            [spec] = requirement.specifier
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def build_stand_in(directory: Path, name: str, version: str) -> None:
    """A wheel holding only metadata: enough for pip's resolver, installs nothing useful."""
    stem = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(directory / f"{stem}-py3-none-any.whl", "w") as whl:
        whl.writestr(
            f"{stem}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
        whl.writestr(
            f"{stem}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: cairn-gpu-kit\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
        )
        whl.writestr(f"{stem}.dist-info/RECORD", "")


def carried() -> dict[str, Path]:
    """Name -> wheel file in gpu/wheels; raises if a package is there twice or is not a wheel."""
    found: dict[str, Path] = {}
    for path in sorted(WHEELS.iterdir()):
        if path.suffix != ".whl":
            raise SystemExit(f"{path}: not a wheel; gpu/wheels must hold wheels only")
        name = canonicalize_name(parse_wheel_filename(path.name)[0])
        if name in found:
            raise SystemExit(f"{name} is carried twice ({found[name].name}, {path.name})")
        found[name] = path
    return found


def resolve(platforms: list[str], stand_ins: Path) -> dict[str, str]:
    """Name -> version pip installs for Python 3.12 from the wheels and stand-ins alone."""
    with tempfile.TemporaryDirectory(prefix="cairn-gpu-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
            "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *platforms, "--target", str(Path(tmp) / "target"), "--report", str(report),
            "--find-links", str(WHEELS), "--find-links", str(stand_ins),
            "-r", str(ROOT / "gpu" / "requirements.txt"), *agent_requirements(),
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"pip cannot resolve from gpu/wheels alone:\n{proc.stderr}")
        installs = json.loads(report.read_text())["install"]
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in installs
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", action="append", required=True, help="pip platform tag")
    platforms = [f"--platform={tag}" for tag in parser.parse_args(argv).platform]
    wheels = carried()
    size = sum(path.stat().st_size for path in wheels.values())
    if size > WHEELS_LIMIT_MIB * MIB:
        raise SystemExit(f"gpu/wheels holds {size / MIB:.1f} MiB > {WHEELS_LIMIT_MIB} MiB")
    pins = image_pins()
    with tempfile.TemporaryDirectory(prefix="cairn-gpu-stand-ins-") as stand_ins:
        for name, version in pins.items():
            build_stand_in(Path(stand_ins), name, version)
        resolved = resolve(platforms, Path(stand_ins))
    unused = sorted(set(wheels) - set(resolved))
    if unused:
        raise SystemExit(f"gpu/wheels carries wheels nothing needs: {unused}")
    from_image = sorted(name for name in resolved if name not in wheels)
    unknown = [name for name in from_image if name not in pins]
    if unknown:
        raise SystemExit(f"resolved from neither gpu/wheels nor the image: {unknown}")
    print(f"gpu/wheels: {len(wheels)} wheels, {size / MIB:.2f} MiB (limit {WHEELS_LIMIT_MIB} MiB)")
    for name, path in sorted(wheels.items()):
        print(f"  carried   {name}=={resolved[name]}  ({path.stat().st_size / MIB:.2f} MiB)")
    for name in from_image:
        print(f"  from image {name} (stand-in {resolved[name]}; gpu/image.txt)")
    print("complete: pip resolves Cairn's agent requirements for Python 3.12 from these alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
