"""The effective checkpoint policy of a job: its Checkpoint's spec over its script's config.

Precedence, field by field: a spec field that is set wins; an unset one leaves the training
script's ``CheckpointConfig`` value. Under ``spec.save.policy: Adaptive`` the intervals the
operator published in ``status.adaptiveInterval`` win over both. Retention is the exception
that proves the rule: the CRD defaults ``retention.keepLast`` (3), because the operator's GC Job
needs a value when no job runs, so a job that names a Checkpoint always retains by its spec.

A value the job cannot apply (e.g. node-local saves without a local directory) keeps the
previously applied value of that field and is reported as a :class:`PolicyProblem` naming the
field and the fix; the rest of the spec still applies. Torch-free: the agent resolves, the
operator and ``kubectl cairn`` display.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, Literal

from cairn_agent.resource.adaptive import published_intervals
from cairn_agent.resource.spec import DEFAULT_KEEP_LAST, RetentionSpec, as_int, section

Source = Literal["spec", "script", "adaptive", "default"]
NonPersistentType = Literal["global", "local"]

DEFAULT_SAVE_STALL_SECONDS: Final = 1800
"""``spec.asyncWorker.saveStallSeconds`` when unset (the CRD's default)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScriptPolicy:
    """What the training script's ``CheckpointConfig`` asks for (the fallback of every field)."""

    save_interval: int | None = None
    non_persistent_save_interval: int | None = None
    non_persistent_type: NonPersistentType | None = None
    local_dir: str | None = None
    async_save: bool = False
    persistent_worker: bool = True
    replication_factor: int = 1
    """1 means no replication (Bridge: ``replication=False``)."""
    replication_jump: int | None = None
    keep_last: int | None = None
    """``most_recent_k``; None keeps every checkpoint (Bridge's -1)."""
    verify_deep: bool = False

    @classmethod
    def of(cls, ckpt: Any) -> ScriptPolicy:
        """Read a Cairn or Megatron-Bridge ``CheckpointConfig``."""
        k = int(getattr(ckpt, "most_recent_k", -1))
        replicate = bool(getattr(ckpt, "replication", False))
        return cls(
            save_interval=getattr(ckpt, "save_interval", None),
            non_persistent_save_interval=getattr(ckpt, "non_persistent_save_interval", None),
            non_persistent_type=getattr(ckpt, "non_persistent_ckpt_type", None),
            local_dir=getattr(ckpt, "non_persistent_local_ckpt_dir", None),
            async_save=bool(getattr(ckpt, "async_save", False)),
            persistent_worker=bool(getattr(ckpt, "use_persistent_ckpt_worker", True)),
            replication_factor=int(getattr(ckpt, "replication_factor", 2)) if replicate else 1,
            replication_jump=getattr(ckpt, "replication_jump", None),
            keep_last=None if k < 0 else k,
            verify_deep=bool(getattr(ckpt, "verify_integrity", False)),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectivePolicy:
    """The policy a job applies, with where each value came from."""

    generation: int
    """``metadata.generation`` of the spec this policy was resolved from (0: script only)."""
    save_interval: int | None
    non_persistent_save_interval: int | None
    non_persistent_type: NonPersistentType | None
    local_dir: str | None
    async_save: bool
    persistent_worker: bool
    replication_factor: int
    replication_jump: int | None
    keep_last: int | None
    keep_every: int | None
    pinned: tuple[int, ...]
    retention_dry_run: bool
    verify_deep: bool
    save_stall_seconds: int
    save_request: str | None
    """``spec.saveNow.requestId``: a persistent save is due once per new id."""
    save_request_reason: str | None
    sources: Mapping[str, Source]
    """Field name → where its value came from."""

    def to_status(self) -> dict[str, Any]:
        """``status.appliedPolicy.values`` / ``.sources`` (CRD field names)."""
        values = {
            "saveInterval": self.save_interval,
            "nonPersistentInterval": self.non_persistent_save_interval,
            "nonPersistentType": self.non_persistent_type,
            "asyncEnabled": self.async_save,
            "asyncPersistent": self.persistent_worker,
            "replicationFactor": self.replication_factor,
            "replicationJump": self.replication_jump,
            "keepLast": self.keep_last,
            "keepEvery": self.keep_every,
            "pinned": list(self.pinned),
            "retentionDryRun": self.retention_dry_run,
            "verifyDeep": self.verify_deep,
            "saveStallSeconds": self.save_stall_seconds,
        }
        return {
            "values": {k: v for k, v in values.items() if v is not None},
            "sources": {_STATUS_NAMES.get(k, k): v for k, v in self.sources.items()},
        }


_STATUS_NAMES: Final = {
    "save_interval": "saveInterval",
    "non_persistent_save_interval": "nonPersistentInterval",
    "non_persistent_type": "nonPersistentType",
    "async_save": "asyncEnabled",
    "persistent_worker": "asyncPersistent",
    "replication_factor": "replicationFactor",
    "replication_jump": "replicationJump",
    "keep_last": "keepLast",
    "verify_deep": "verifyDeep",
    "local_dir": "localDir",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyProblem:
    """A spec field the job could not apply, and what to do about it."""

    field: str
    """The spec field, e.g. ``spec.save.nonPersistentType``."""
    message: str
    """Why it cannot apply and how to fix it."""

    def to_status(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resolution:
    """One resolution: the policy to apply and the problems found on the way."""

    policy: EffectivePolicy
    problems: tuple[PolicyProblem, ...]


class _Picker:
    """Spec value if set, else the script's; records the source of each field."""

    def __init__(self) -> None:
        self.sources: dict[str, Source] = {}

    def pick(self, name: str, spec_value: Any, script_value: Any) -> Any:
        if spec_value is not None:
            self.sources[name] = "spec"
            return spec_value
        self.sources[name] = "script"
        return script_value


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _positive(value: Any) -> int | None:
    number = as_int(value)
    return number if number is not None and number >= 1 else None


def _intervals(
    picker: _Picker, spec: Mapping[str, Any], status: Mapping[str, Any], script: ScriptPolicy
) -> tuple[int | None, int | None]:
    save = section(spec, "save")
    interval = picker.pick("save_interval", _positive(save.get("interval")), script.save_interval)
    non_persistent = picker.pick(
        "non_persistent_save_interval",
        _positive(save.get("nonPersistentInterval")),
        script.non_persistent_save_interval,
    )
    published = published_intervals(spec, status)
    if published.persistent is not None:
        interval, picker.sources["save_interval"] = published.persistent, "adaptive"
    if published.non_persistent is not None:
        non_persistent = published.non_persistent
        picker.sources["non_persistent_save_interval"] = "adaptive"
    return interval, non_persistent


def _save_request(spec: Mapping[str, Any]) -> tuple[str | None, str | None]:
    request = section(spec, "saveNow")
    request_id = request.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        return None, None
    reason = request.get("reason")
    return request_id, reason if isinstance(reason, str) else None


def resolve(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    generation: int,
    script: ScriptPolicy,
    previous: EffectivePolicy | None = None,
) -> Resolution:
    """The effective policy of ``spec`` (at ``generation``) over ``script``.

    ``previous`` is the policy applied so far: a field this spec sets to a value the job cannot
    apply keeps its previous value (or the script's, on the first resolution).
    """
    policy = _build(spec, status, generation, script)
    return _checked(policy, previous or _build({}, {}, 0, script))


def _build(
    spec: Mapping[str, Any], status: Mapping[str, Any], generation: int, script: ScriptPolicy
) -> EffectivePolicy:
    picker = _Picker()
    interval, non_persistent_interval = _intervals(picker, spec, status, script)
    worker = section(spec, "asyncWorker")
    replication = section(spec, "replication")
    retention = RetentionSpec.from_spec(spec) if spec else None
    request_id, request_reason = _save_request(spec)
    return EffectivePolicy(
        generation=generation,
        save_interval=interval,
        non_persistent_save_interval=non_persistent_interval,
        non_persistent_type=picker.pick(
            "non_persistent_type",
            _type(section(spec, "save").get("nonPersistentType")),
            script.non_persistent_type,
        ),
        local_dir=picker.pick(
            "local_dir", _text(section(spec, "storage", "local").get("path")), script.local_dir
        ),
        async_save=picker.pick("async_save", _bool(worker.get("enabled")), script.async_save),
        persistent_worker=picker.pick(
            "persistent_worker", _bool(worker.get("persistent")), script.persistent_worker
        ),
        replication_factor=picker.pick(
            "replication_factor", _positive(replication.get("factor")), script.replication_factor
        ),
        replication_jump=picker.pick(
            "replication_jump", _positive(replication.get("jump")), script.replication_jump
        ),
        keep_last=picker.pick(
            "keep_last", retention.keep_last if retention else None, script.keep_last
        ),
        keep_every=retention.keep_every if retention else None,
        pinned=retention.pinned if retention else (),
        retention_dry_run=retention.dry_run if retention else False,
        verify_deep=picker.pick(
            "verify_deep", _bool(section(spec, "verification").get("deep")), script.verify_deep
        ),
        save_stall_seconds=_positive(worker.get("saveStallSeconds")) or DEFAULT_SAVE_STALL_SECONDS,
        save_request=request_id,
        save_request_reason=request_reason,
        sources=picker.sources,
    )


def _type(value: Any) -> NonPersistentType | None:
    return value if value in ("global", "local") else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _check_local(policy: EffectivePolicy) -> PolicyProblem | None:
    if policy.non_persistent_type == "local" and not policy.local_dir:
        return PolicyProblem(
            field="spec.save.nonPersistentType",
            message="nonPersistentType: local needs a node-local directory: set "
            "spec.storage.local.path (or the script's non_persistent_local_ckpt_dir)",
        )
    return None


def _check_keep_last(policy: EffectivePolicy) -> PolicyProblem | None:
    if policy.async_save and policy.keep_last is not None and policy.keep_last < 2:
        return PolicyProblem(
            field="spec.retention.keepLast",
            message=f"keepLast: {policy.keep_last} with async saves would delete the checkpoint "
            "still being written: raise keepLast to 2 or more, or disable the async worker",
        )
    return None


def _check_replication(policy: EffectivePolicy) -> PolicyProblem | None:
    if policy.replication_factor > 1 and policy.replication_jump is None:
        return PolicyProblem(
            field="spec.replication.jump",
            message="replication.factor > 1 needs replication.jump (usually the ranks per "
            "node): set spec.replication.jump",
        )
    return None


_CHECKS: Final = (
    (_check_local, ("non_persistent_type", "local_dir")),
    (_check_keep_last, ("keep_last",)),
    (_check_replication, ("replication_factor", "replication_jump")),
)


def _checked(policy: EffectivePolicy, previous: EffectivePolicy) -> Resolution:
    """Keep the previous value of every field a failed check names."""
    problems: list[PolicyProblem] = []
    for check, fields in _CHECKS:
        problem = check(policy)
        if problem is None:
            continue
        problems.append(problem)
        kept = {name: getattr(previous, name) for name in fields}
        sources = dict(policy.sources) | {
            name: previous.sources.get(name, "script") for name in fields
        }
        policy = dataclasses.replace(policy, **kept, sources=sources)
    return Resolution(policy=policy, problems=tuple(problems))


__all__ = [
    "DEFAULT_KEEP_LAST",
    "EffectivePolicy",
    "PolicyProblem",
    "Resolution",
    "ScriptPolicy",
    "resolve",
]
