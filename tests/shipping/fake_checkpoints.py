"""Build real committed checkpoint roots through the storage API, without torch.

The shard files hold deterministic bytes instead of torch DCP data: the CLI tools only look at
names, sizes, checksums and the manifest, and the commit path is the production one.
"""

from __future__ import annotations

import time
from pathlib import Path

from cairn_agent.storage import layout
from cairn_agent.storage.commit import commit_staging_dir, create_staging_dir, publish
from cairn_agent.storage.generation import claim_generation
from cairn_agent.storage.manifest import Manifest, describe_files

WORLD_SIZE = 2


def _shard_bytes(iteration: int, name: str) -> bytes:
    return f"{name}@{iteration};".encode() * 64


def commit_fake(
    root: Path, iteration: int, *, generation: int = 1, publish_it: bool = True
) -> Path:
    """Commit one fake 2-rank torch_dist iteration under ``root`` (and point the tracker at it)."""
    claim_generation(root, generation)
    staging = create_staging_dir(root, iteration, generation)
    names = [layout.distcp_file_name(r, 0) for r in range(WORLD_SIZE)]
    names += [layout.DCP_METADATA, layout.COMMON_PT]
    for name in names:
        (staging / name).write_bytes(_shard_bytes(iteration, name))
    now = time.time()
    manifest = Manifest(
        iteration=iteration,
        generation=generation,
        world_size=WORLD_SIZE,
        layout={"tp": 1, "pp": 1, "dp": WORLD_SIZE},
        files=describe_files(staging, names),
        created_at=now - 1.0,
        committed_at=now,
    )
    final = layout.iteration_dir(root, iteration)
    commit_staging_dir(staging, final, manifest=manifest)
    if publish_it:
        publish(root, iteration, generation=generation)
    return final


def make_root(root: Path, iterations: list[int], *, generation: int = 1) -> Path:
    """A root with the given iterations committed in order; the tracker names the last."""
    for iteration in iterations:
        commit_fake(root, iteration, generation=generation)
    return root


def flip_byte(path: Path) -> None:
    """Corrupt a file in place without changing its size (only a checksum catches it)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
