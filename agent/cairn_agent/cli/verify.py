"""``cairn verify <root>``: check committed checkpoints against their manifests.

Exit status 0 means every checked checkpoint is valid. Any corruption (a missing, truncated or
changed file, an unlisted shard, a garbage tracker, a tracker pointing at a checkpoint that is
not committed) prints one line naming the file and the failed check to stderr and exits 2;
corruption never exits 0. Without ``--deep`` only sizes are compared; ``--deep`` also checksums
every file with the algorithm its manifest entry names (CRC32C, or CRC-32 for checkpoints
written before manifest version 2), which reads every byte.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn_agent.cli import formatting
from cairn_agent.errors import CheckpointCorruptError, CheckpointNotFoundError
from cairn_agent.storage import layout, listing
from cairn_agent.storage.manifest import Manifest, manifest_path, verify_checkpoint_dir
from cairn_agent.storage.tracker import read_tracker

NAME = "verify"
EXIT_CORRUPT = 2


@dataclass(frozen=True, kw_only=True)
class Finding:
    """The outcome of checking one directory (or the tracker)."""

    name: str
    """Directory (or tracker file) name under the root."""
    status: str
    """``ok``, ``corrupt`` or ``incomplete`` (a save that never committed; not corruption)."""
    detail: str
    """What was checked, or the failed check with the offending file."""


def add_parser(subparsers: Any) -> None:
    """Register ``cairn verify``."""
    parser = subparsers.add_parser(
        NAME,
        help="verify checkpoints against their manifests (exit 2 on corruption)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, help="checkpoint root (CheckpointConfig.save)")
    parser.add_argument("--iteration", type=int, help="verify only this iteration")
    parser.add_argument(
        "--deep", action="store_true", help="also compare the checksum of every file"
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    findings = verify_root(args.root, iteration=args.iteration, deep=args.deep)
    if args.json:
        print(formatting.to_json([f.__dict__ for f in findings]))
    else:
        print(render(findings, deep=args.deep))
    corrupt = [f for f in findings if f.status == "corrupt"]
    for finding in corrupt:
        print(f"cairn verify: CORRUPT {finding.detail}", file=sys.stderr)
    return EXIT_CORRUPT if corrupt else 0


def verify_root(root: Path, *, iteration: int | None = None, deep: bool = False) -> list[Finding]:
    """Check one iteration, or the tracker and every iteration directory of ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{root}: no such checkpoint root (not a directory)")
    if iteration is not None:
        directory = layout.iteration_dir(root, iteration)
        if not directory.is_dir():
            raise CheckpointNotFoundError(f"{directory}: iteration {iteration} does not exist")
        return [check_dir(directory, deep)]
    findings = [check_tracker(root)]
    findings += [check_dir(d, deep) for d in _iteration_dirs(root)]
    return findings


def _iteration_dirs(root: Path) -> list[Path]:
    # Every iter_*/release directory, not only the listed ones: listing hides a directory
    # whose manifest is garbage, and that is exactly what verify must report.
    dirs = [e for e in root.iterdir() if e.is_dir() and layout.is_iteration_dir_name(e.name)]
    return sorted(dirs, key=lambda d: (d.name == layout.RELEASE_NAME, d.name))


def check_tracker(root: Path) -> Finding:
    """The tracker parses and points at a committed checkpoint (no tracker is fine)."""
    name = layout.TRACKER_FILENAME
    try:
        value = read_tracker(root)
    except CheckpointCorruptError as exc:
        return Finding(name=name, status="corrupt", detail=str(exc))
    if value is None:
        return Finding(name=name, status="ok", detail="no tracker (nothing published yet)")
    target = layout.iteration_dir(root, value.iteration, value.release)
    if not listing.is_committed(target):
        detail = f"{layout.tracker_path(root)}: points at {target.name}, which is not committed"
        return Finding(name=name, status="corrupt", detail=detail)
    return Finding(name=name, status="ok", detail=f"points at {target.name}")


def check_dir(directory: Path, deep: bool) -> Finding:
    """Verify one iteration directory against its manifest."""
    if _never_committed(directory):
        detail = f"{directory}: no {layout.METADATA_JSON} (a save that never finished)"
        return Finding(name=directory.name, status="incomplete", detail=detail)
    try:
        manifest = verify_checkpoint_dir(directory, deep=deep)
    except CheckpointCorruptError as exc:
        return Finding(name=directory.name, status="corrupt", detail=str(exc))
    return Finding(name=directory.name, status="ok", detail=_ok_detail(manifest, deep))


def _never_committed(directory: Path) -> bool:
    # A Cairn save writes metadata.json before its manifest and renames the directory into
    # place only after both; with neither file present the directory was never committed.
    metadata = directory / layout.METADATA_JSON
    return not metadata.exists() and not manifest_path(directory).exists()


def _ok_detail(manifest: Manifest | None, deep: bool) -> str:
    if manifest is None:
        return "metadata.json valid; no Cairn manifest (Megatron-written), files not checked"
    algorithms = "/".join(manifest.algorithms) or "checksums"
    checks = f"sizes and {algorithms}" if deep else "sizes"
    size = formatting.human_bytes(manifest.total_bytes)
    return f"{len(manifest.files)} files, {size}, {checks} match the manifest"


def render(findings: list[Finding], *, deep: bool) -> str:
    """One line per finding and a summary line."""
    lines = [f"{f.status.upper():<10} {f.name:<36} {f.detail}" for f in findings]
    corrupt = sum(f.status == "corrupt" for f in findings)
    mode = "deep (checksums)" if deep else "shallow (sizes; --deep checksums)"
    verdict = f"{corrupt} CORRUPT" if corrupt else "all valid"
    lines.append(f"verify {mode}: {verdict}")
    return "\n".join(lines)
