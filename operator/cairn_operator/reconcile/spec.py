"""A typed, defaulted view of a Checkpoint's ``spec`` (the CRD's defaults, applied here too).

The API server applies the CRD's defaults on write, but objects created before a CRD upgrade,
or served by an emulator, may lack them; reconcile code reads the spec only through this view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpecView:
    """The fields of ``spec`` the operator acts on, with the CRD's defaults."""

    claim_name: str
    """``storage.persistent.claimName``: the PVC the GC Job mounts."""
    mount_path: str
    """``storage.persistent.mountPath``: where the PVC is mounted."""
    path: str
    """``storage.persistent.path``: the checkpoint root."""
    local_path: str | None
    """``storage.local.path``, the node-local tier, if any."""
    save_interval: int | None
    """``save.interval``: persistent save every N steps."""
    non_persistent_interval: int | None
    """``save.nonPersistentInterval``."""
    non_persistent_type: str
    """``save.nonPersistentType``: global or local."""
    async_enabled: bool
    """``asyncWorker.enabled``."""
    async_persistent: bool
    """``asyncWorker.persistent``."""
    heartbeat_timeout_s: int
    """``asyncWorker.heartbeatTimeoutSeconds``."""
    save_stall_s: int
    """``asyncWorker.saveStallSeconds``."""
    replication_factor: int
    """``replication.factor``."""
    keep_last: int | None
    """``retention.keepLast``."""
    keep_every: int | None
    """``retention.keepEvery``."""
    pinned: tuple[int, ...]
    """``retention.pinned``."""
    dry_run: bool
    """``retention.dryRun``."""
    resume_policy: str
    """``resume.policy``: LatestVerified, LatestCommitted or Pinned."""
    resume_iteration: int | None
    """``resume.iteration`` (used with policy Pinned)."""
    deletion_policy: str
    """``deletionPolicy``: Retain or Delete."""


def _section(spec: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    node: Any = spec
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_spec(spec: Mapping[str, Any]) -> SpecView:
    """Read ``spec`` tolerantly: missing or mistyped fields take the CRD's defaults."""
    persistent = _section(spec, "storage", "persistent")
    save = _section(spec, "save")
    worker = _section(spec, "asyncWorker")
    retention = _section(spec, "retention")
    resume = _section(spec, "resume")
    pinned = retention.get("pinned") or ()
    return SpecView(
        claim_name=str(persistent.get("claimName", "")),
        mount_path=str(persistent.get("mountPath", "")),
        path=str(persistent.get("path", "")),
        local_path=_section(spec, "storage", "local").get("path"),
        save_interval=_int(save.get("interval")),
        non_persistent_interval=_int(save.get("nonPersistentInterval")),
        non_persistent_type=str(save.get("nonPersistentType", "global")),
        async_enabled=bool(worker.get("enabled", False)),
        async_persistent=bool(worker.get("persistent", True)),
        heartbeat_timeout_s=_int(worker.get("heartbeatTimeoutSeconds")) or 120,
        save_stall_s=_int(worker.get("saveStallSeconds")) or 1800,
        replication_factor=_int(_section(spec, "replication").get("factor")) or 1,
        keep_last=_int(retention.get("keepLast", 3)),
        keep_every=_int(retention.get("keepEvery")),
        pinned=tuple(sorted({p for p in pinned if _int(p) is not None})),
        dry_run=bool(retention.get("dryRun", False)),
        resume_policy=str(resume.get("policy", "LatestVerified")),
        resume_iteration=_int(resume.get("iteration")),
        deletion_policy=str(spec.get("deletionPolicy", "Retain")),
    )
