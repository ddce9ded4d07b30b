"""Cross-field checks of a Checkpoint's spec that the CRD schema and its CEL rules do not make.

Errors make the spec unusable (condition ``Valid=False``); warnings point at a likely mistake
that still works (``Valid=True`` with the warning in its message, plus a Warning Event).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cairn_operator.reconcile.spec import SpecView


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """What is wrong with a spec."""

    errors: tuple[str, ...]
    """Problems that make the policy unusable; each says what to change."""
    warnings: tuple[str, ...]
    """Likely mistakes that still leave a working policy."""


def _storage_errors(spec: SpecView) -> list[str]:
    errors = []
    if spec.replication_factor > 1 and not spec.local_path:
        errors.append(
            f"spec.replication.factor={spec.replication_factor} replicates node-local "
            "checkpoints, but spec.storage.local.path is not set; set a local path or use "
            "factor 1"
        )
    if spec.non_persistent_type == "local" and not spec.local_path:
        errors.append(
            "spec.save.nonPersistentType=local needs spec.storage.local.path; set it or use "
            "nonPersistentType global"
        )
    mount = spec.mount_path.rstrip("/") or "/"
    if spec.path != mount and not spec.path.startswith(mount.rstrip("/") + "/"):
        errors.append(
            f"spec.storage.persistent.path={spec.path!r} is outside mountPath={spec.mount_path!r}; "
            "the GC Job could not reach it"
        )
    return errors


def _cadence_errors(spec: SpecView) -> list[str]:
    errors = []
    retention = spec.retention
    if spec.async_enabled and retention.keep_last is not None and retention.keep_last < 2:
        errors.append(
            f"spec.retention.keepLast={retention.keep_last} with the async worker enabled could "
            "delete the only committed checkpoint while the next one is saving; use 2 or more"
        )
    interval = spec.save_interval
    if interval and retention.keep_every and retention.keep_every % interval:
        errors.append(
            f"spec.retention.keepEvery={retention.keep_every} is not a multiple of "
            f"spec.save.interval={interval}, so most milestones are never saved; use a "
            f"multiple of {interval}"
        )
    if spec.resume_policy == "Pinned" and spec.resume_iteration is None:
        errors.append("spec.resume.policy=Pinned needs spec.resume.iteration")
    if spec.save_policy == "Adaptive" and spec.adaptive is None:
        errors.append(
            "spec.save.policy=Adaptive needs spec.save.adaptive.minInterval and maxInterval "
            "(1 <= minInterval <= maxInterval); set both, or use policy Fixed"
        )
    return errors


def _warnings(spec: SpecView, saved: Sequence[int]) -> list[str]:
    warnings = []
    interval = spec.save_interval
    if interval:
        never = [p for p in spec.retention.pinned if p % interval]
        if never:
            warnings.append(
                f"pinned iterations {never} are not multiples of spec.save.interval={interval} "
                "and may never be saved"
            )
    if saved:
        absent = [p for p in spec.retention.pinned if p not in saved and p < max(saved)]
        if absent:
            warnings.append(f"pinned iterations {absent} are not among the saved iterations")
    if spec.save_policy != "Adaptive" and spec.adaptive is not None:
        warnings.append(
            "spec.save.adaptive has no effect while spec.save.policy is Fixed; set policy "
            "Adaptive to let the operator choose the intervals"
        )
    npi = spec.non_persistent_interval
    if interval and npi and npi >= interval:
        warnings.append(
            f"spec.save.nonPersistentInterval={npi} is not below spec.save.interval={interval}, "
            "so non-persistent saves add nothing"
        )
    return warnings


def validate(spec: SpecView, saved: Sequence[int] = ()) -> ValidationResult:
    """Check ``spec`` (and pins against the ``saved`` iterations the agent reported)."""
    errors = _storage_errors(spec) + _cadence_errors(spec)
    return ValidationResult(errors=tuple(errors), warnings=tuple(_warnings(spec, saved)))
