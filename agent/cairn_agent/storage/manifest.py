"""``cairn.manifest.json``: what makes an iteration directory a committed Cairn checkpoint.

The manifest lists every file of the iteration directory (except itself) with its size and
checksum (CRC32C since manifest version 2, zlib CRC-32 before; each entry names its
algorithm, see ``storage.checksum``), plus world size, parallel layout, restart generation and timestamps. It is written last
by the commit protocol, so its presence means every file it names was complete when the
directory was renamed into place. Megatron ignores it. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cairn_agent.errors import CheckpointCorruptError
from cairn_agent.storage import layout
from cairn_agent.storage.checksum import (
    DEFAULT_ALGORITHM,
    LEGACY_ALGORITHM,
    ChecksumAlgorithm,
    check_algorithm,
    check_hex,
    checksum_bytes,
    checksum_file,
)
from cairn_agent.storage.durable import DEFAULT_IO, DurableIO, atomic_write_text

MANIFEST_VERSION = 2
"""Version 2 names each file's checksum algorithm; version 1 (CRC-32 only) still reads."""
# Files megatron-core's torch_dist loader reads; one present but not listed means the
# directory was changed after commit (or the manifest is stale).
_REQUIRED_LISTING = (layout.DCP_METADATA, layout.COMMON_PT)


@dataclass(frozen=True)
class FileEntry:
    """Size and checksum of one file of a checkpoint."""

    size: int
    """Size in bytes."""
    checksum: str
    """Checksum of the contents as 8 lowercase hex digits."""
    algorithm: ChecksumAlgorithm = DEFAULT_ALGORITHM
    """How ``checksum`` was computed (``crc32`` for entries of version-1 manifests)."""

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"file size must be a non-negative int, got {self.size!r}")
        check_algorithm(self.algorithm)
        check_hex(self.algorithm, self.checksum)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; a CRC-32 entry keeps the version-1 form, so its digest never changes."""
        if self.algorithm == LEGACY_ALGORITHM:
            return {"size": self.size, "crc32": self.checksum}
        return {
            "size": self.size,
            "checksum": {"algorithm": self.algorithm, "value": self.checksum},
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> FileEntry:
        """Parse either form (``{"crc32": ...}`` or ``{"checksum": {algorithm, value}}``)."""
        if "checksum" in obj:
            checksum = _typed(obj, "checksum", dict)
            return cls(
                size=obj["size"],
                checksum=checksum["value"],
                algorithm=check_algorithm(_typed(checksum, "algorithm", str)),
            )
        return cls(size=obj["size"], checksum=obj["crc32"], algorithm=LEGACY_ALGORITHM)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Contents of ``cairn.manifest.json``."""

    iteration: int
    """Training iteration saved (0 for a release checkpoint)."""
    release: bool = False
    """True for a ``release`` directory."""
    generation: int
    """Restart generation of the writer."""
    world_size: int
    """Number of ranks that wrote the checkpoint."""
    layout: dict[str, int]
    """Parallel layout, e.g. ``{"tp": 1, "pp": 1, "dp": 2}``."""
    files: dict[str, FileEntry]
    """Relative POSIX path -> entry, for every file of the directory except the manifest."""
    created_at: float
    """Unix time the save started."""
    committed_at: float
    """Unix time the save was committed."""
    ckpt_format: str = "torch_dist"
    """Checkpoint format (Megatron's ``ckpt_format``)."""
    version: int = MANIFEST_VERSION
    """Manifest schema version."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-serialisable details (e.g. the writer's hostname)."""

    def __post_init__(self) -> None:
        if self.iteration < 0:
            raise ValueError(f"iteration must be non-negative, got {self.iteration}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.generation < 0:
            raise ValueError(f"generation must be non-negative, got {self.generation}")
        for name in self.files:
            _check_relative_name(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "version": self.version,
            "iteration": self.iteration,
            "release": self.release,
            "generation": self.generation,
            "world_size": self.world_size,
            "layout": dict(self.layout),
            "ckpt_format": self.ckpt_format,
            "created_at": self.created_at,
            "committed_at": self.committed_at,
            "files": {k: v.to_dict() for k, v in sorted(self.files.items())},
            "extra": self.extra,
        }

    def to_json(self) -> str:
        """Indented, key-sorted JSON (stable for diffs and digests)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> Manifest:
        """Parse manifest text; ``CheckpointCorruptError(source, ...)`` on anything invalid."""
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise CheckpointCorruptError(source, f"manifest is not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise CheckpointCorruptError(source, "manifest is not a JSON object")
        try:
            return _manifest_from_dict(obj, source)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorruptError(source, f"manifest is malformed ({exc!r})") from exc

    def digest(self) -> str:
        """SHA-256 hex of the canonical (compact, key-sorted) JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of every listed file."""
        return sum(entry.size for entry in self.files.values())

    @property
    def algorithms(self) -> list[str]:
        """The checksum algorithms its entries use, sorted (one, unless files were mixed)."""
        return sorted({entry.algorithm for entry in self.files.values()})


def _manifest_from_dict(obj: dict[str, Any], source: Path) -> Manifest:
    version = _typed(obj, "version", int)
    if version > MANIFEST_VERSION:
        raise CheckpointCorruptError(
            source,
            f"manifest version {version} is newer than this Cairn supports "
            f"({MANIFEST_VERSION}); upgrade Cairn to read it",
        )
    files = _typed(obj, "files", dict)
    return Manifest(
        version=version,
        iteration=_typed(obj, "iteration", int),
        release=_typed(obj, "release", bool),
        generation=_typed(obj, "generation", int),
        world_size=_typed(obj, "world_size", int),
        layout={str(k): _int(v) for k, v in _typed(obj, "layout", dict).items()},
        ckpt_format=_typed(obj, "ckpt_format", str),
        created_at=float(_typed(obj, "created_at", (int, float))),
        committed_at=float(_typed(obj, "committed_at", (int, float))),
        files={str(k): FileEntry.from_dict(_typed(files, k, dict)) for k in files},
        extra=_typed(obj, "extra", dict) if "extra" in obj else {},
    )


def _typed(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj[key]
    is_bool = isinstance(value, bool)
    bool_allowed = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (is_bool and not bool_allowed):
        raise TypeError(f"field {key!r} has {type(value).__name__} {value!r}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"layout value {value!r} is not an int")
    return value


def _check_relative_name(name: str) -> None:
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or name == layout.MANIFEST_FILENAME:
        raise ValueError(f"manifest file name {name!r} must be a relative path inside the dir")


def describe_bytes(data: bytes, algorithm: ChecksumAlgorithm = DEFAULT_ALGORITHM) -> FileEntry:
    """Entry for in-memory contents (what a file holding ``data`` would get)."""
    return FileEntry(len(data), checksum_bytes(data, algorithm), algorithm)


def describe_file(path: Path, algorithm: ChecksumAlgorithm = DEFAULT_ALGORITHM) -> FileEntry:
    """Size and checksum of a file, read once. Savers checksum while writing instead; this is
    for verification and for tools that describe files written by others."""
    size, checksum = checksum_file(path, algorithm)
    return FileEntry(size, checksum, algorithm)


def describe_files(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """``describe_file`` of each relative name under ``directory``."""
    return {name: describe_file(Path(directory) / name) for name in names}


def manifest_path(directory: Path) -> Path:
    return Path(directory) / layout.MANIFEST_FILENAME


def write_manifest(directory: Path, manifest: Manifest, io: DurableIO = DEFAULT_IO) -> None:
    """Atomically (re)write the manifest of ``directory``."""
    atomic_write_text(manifest_path(directory), manifest.to_json(), io)


def read_manifest(directory: Path) -> Manifest:
    """Parse the manifest of ``directory``; ``CheckpointCorruptError`` if missing or garbage."""
    path = manifest_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CheckpointCorruptError(path, "manifest is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(path, f"manifest is unreadable ({exc})") from exc
    return Manifest.from_json(text, path)


def verify_checkpoint_dir(directory: Path, deep: bool = True) -> Manifest | None:
    """Check that ``directory`` is a complete torch_dist checkpoint; return its manifest.

    ``metadata.json`` (megatron-core's completeness marker) must exist and name the torch_dist
    backend. When a manifest exists, every listed file must exist with the listed size (and,
    when ``deep``, checksum, by the algorithm its entry names), and no DCP shard, ``.metadata`` or ``common.pt`` may be unlisted.
    Returns None for a foreign (Megatron-written) checkpoint without a manifest.
    """
    directory = Path(directory)
    check_metadata_json(directory)
    if not manifest_path(directory).exists():
        return None
    manifest = read_manifest(directory)
    _check_manifest_names_dir(directory, manifest)
    for name, entry in sorted(manifest.files.items()):
        _check_file(directory / name, entry, deep)
    _check_unlisted(directory, manifest)
    return manifest


def check_metadata_json(directory: Path) -> dict[str, Any]:
    """The parsed ``metadata.json`` of a torch_dist checkpoint, or ``CheckpointCorruptError``."""
    path = Path(directory) / layout.METADATA_JSON
    if not Path(directory).is_dir():
        raise CheckpointCorruptError(path, f"checkpoint directory {directory} does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointCorruptError(
            path, "missing: the save never completed (metadata.json is written last)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointCorruptError(path, f"not valid JSON ({exc})") from exc
    backend = obj.get("sharded_backend") if isinstance(obj, dict) else None
    if backend != "torch_dist":
        raise CheckpointCorruptError(
            path, f"sharded_backend is {backend!r}, expected 'torch_dist' (not a torch_dist ckpt)"
        )
    return dict(obj)


def _check_manifest_names_dir(directory: Path, manifest: Manifest) -> None:
    # A manifest copied into (or a dir renamed onto) another iteration would resume the wrong step.
    expected = layout.parse_iteration_dir_name(directory.name)
    if expected is not None and (manifest.release or manifest.iteration != expected):
        raise CheckpointCorruptError(
            manifest_path(directory),
            f"manifest is for iteration {manifest.iteration} but the directory is {directory.name}",
        )


def _check_file(path: Path, entry: FileEntry, deep: bool) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise CheckpointCorruptError(path, "listed in the manifest but missing") from exc
    if size != entry.size:
        raise CheckpointCorruptError(
            path, f"size is {size} bytes, manifest says {entry.size} (truncated or overwritten)"
        )
    if deep:
        _, actual = checksum_file(path, entry.algorithm)
        if actual != entry.checksum:
            raise CheckpointCorruptError(
                path,
                f"{entry.algorithm} is {actual}, manifest says {entry.checksum} (contents changed)",
            )


def _check_unlisted(directory: Path, manifest: Manifest) -> None:
    for child in sorted(directory.iterdir()):
        name = child.name
        must_be_listed = name.endswith(layout.DISTCP_SUFFIX) or name in _REQUIRED_LISTING
        if must_be_listed and name not in manifest.files:
            raise CheckpointCorruptError(
                child, "present in the checkpoint but not listed in its manifest"
            )
