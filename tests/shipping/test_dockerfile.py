"""The operator image, checked without a Docker engine: the Dockerfile's instructions, its build
context, a build of the package from exactly the files it copies, and a torch-free import."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from cairn_agent.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def _ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))] + list(parts)
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            ignored = not negate
    return ignored


def _copy_sources() -> list[str]:
    sources = []
    for op, args in _instructions():
        if op == "COPY" and not args.startswith("--from"):
            sources += [s.rstrip("/") for s in args.split()[:-1]]
    return sources


def test_multi_stage_slim_build_running_cairn_operator_as_non_root() -> None:
    steps = _instructions()
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert len(bases) >= 2 and set(bases) == {BASE_IMAGE}
    final = dict(_final_stage())
    assert final["USER"].split(":")[0] not in ("0", "root")
    assert any(op == "COPY" and args.startswith("--from=build") for op, args in _final_stage())
    entrypoint, command = json.loads(final["ENTRYPOINT"]), json.loads(final["CMD"])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["cairn"] and "cairn" in scripts
    assert build_parser().parse_args(command).command == "operator"


def test_installs_the_base_package_without_the_agent_extra() -> None:
    installs = [args for op, args in _instructions() if op == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        assert "[agent" not in args and "torch" not in args.replace("find_spec('torch')", "")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies if d.startswith(("torch", "megatron", "nvidia"))]


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    for source in _copy_sources():
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    for heavy in (".venv", ".git", "tests", "bench", "agent/cairn_agent/__pycache__"):
        assert _ignored(heavy), f"{heavy} would be sent to the Docker daemon"


def test_the_copied_files_build_a_wheel_with_both_console_scripts(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for source in _copy_sources():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(
                src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, context / source)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*command, "-w", str(tmp_path / "dist"), str(context)], check=True, capture_output=True
    )

    (wheel,) = (tmp_path / "dist").glob("cairn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "cairn = cairn_agent.cli.main:main" in entry_points
    assert "kubectl-cairn = cairn_agent.cli.kubectl_plugin:main" in entry_points
    base_requirements = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert base_requirements and not any("torch" in line for line in base_requirements)
    assert "cairn_operator/run.py" in names and "cairn_agent/cli/gc.py" in names


def test_operator_and_cli_entry_points_import_with_torch_unavailable() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "import cairn_operator.run\n"
        "from cairn_agent.cli.main import build_parser\n"
        "for argv in (['operator'], ['gc', '/x', '--keep-last', '2'], ['verify', '/x']):\n"
        "    build_parser().parse_args(argv)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
