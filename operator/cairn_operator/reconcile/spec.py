"""A typed, defaulted view of a Checkpoint's ``spec`` (the CRD's defaults, applied here too).

The API server applies the CRD's defaults on write, but objects created before a CRD upgrade,
or served by an emulator, may lack them; reconcile code reads the spec only through this view.
Sections shared with the agent's tools (``spec.retention``) are read by
``cairn_agent.resource.spec``, which holds their defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource.spec import RetentionSpec, as_int, section

from cairn_operator.reconcile.adaptive import AdaptivePolicy, read_policy


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
    save_policy: str
    """``save.policy``: Fixed (the intervals above) or Adaptive (the operator chooses them)."""
    adaptive: AdaptivePolicy | None
    """``save.adaptive`` if set with usable bounds (it acts only with policy Adaptive)."""
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
    retention: RetentionSpec
    """``retention``: keepLast, keepEvery, pinned, dryRun."""
    resume_policy: str
    """``resume.policy``: LatestVerified, LatestCommitted or Pinned."""
    resume_iteration: int | None
    """``resume.iteration`` (used with policy Pinned)."""
    deletion_policy: str
    """``deletionPolicy``: Retain or Delete."""
    verify_deep: bool = False
    """``verification.deep``: the GC Job checksums files (``cairn gc --deep``)."""


_last_read: tuple[Mapping[str, Any], SpecView] | None = None


def read_spec(spec: Mapping[str, Any]) -> SpecView:
    """Read ``spec`` tolerantly: missing or mistyped fields take the CRD's defaults.

    Several handler groups read the spec of the same watch event; the last mapping read and its
    view are kept, so each event's spec is parsed once (watch bodies are never mutated).
    """
    global _last_read
    last = _last_read
    if last is not None and last[0] is spec:
        return last[1]
    view = _read(spec)
    _last_read = (spec, view)
    return view


def _read(spec: Mapping[str, Any]) -> SpecView:
    persistent = section(spec, "storage", "persistent")
    save = section(spec, "save")
    worker = section(spec, "asyncWorker")
    resume = section(spec, "resume")
    return SpecView(
        claim_name=str(persistent.get("claimName", "")),
        mount_path=str(persistent.get("mountPath", "")),
        path=str(persistent.get("path", "")),
        local_path=section(spec, "storage", "local").get("path"),
        save_interval=as_int(save.get("interval")),
        non_persistent_interval=as_int(save.get("nonPersistentInterval")),
        non_persistent_type=str(save.get("nonPersistentType", "global")),
        save_policy=str(save.get("policy", "Fixed")),
        adaptive=read_policy(save),
        async_enabled=bool(worker.get("enabled", False)),
        async_persistent=bool(worker.get("persistent", True)),
        heartbeat_timeout_s=as_int(worker.get("heartbeatTimeoutSeconds")) or 120,
        verify_deep=section(spec, "verification").get("deep") is True,
        save_stall_s=as_int(worker.get("saveStallSeconds")) or 1800,
        replication_factor=as_int(section(spec, "replication").get("factor")) or 1,
        retention=RetentionSpec.from_spec(spec),
        resume_policy=str(resume.get("policy", "LatestVerified")),
        resume_iteration=as_int(resume.get("iteration")),
        deletion_policy=str(spec.get("deletionPolicy", "Retain")),
    )
