"""Every spec field reaches the live config the job reads; unset fields leave the script's."""

from __future__ import annotations

from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.flows.control import apply_policy
from cairn_agent.resource.policy import ScriptPolicy, resolve
from cairn_agent.resource.retention import plan_from_status
from cairn_agent.resource.spec import DEFAULT_KEEP_LAST, RetentionSpec
from cairn_agent.state.train import GlobalState
from cairn_operator.reconcile.gc_job import retention_command
from cairn_operator.reconcile.spec import read_spec

SPEC = {
    "storage": {"local": {"path": "/local/cairn"}},
    "save": {"interval": 500, "nonPersistentInterval": 50, "nonPersistentType": "local"},
    "asyncWorker": {"enabled": True, "persistent": False, "saveStallSeconds": 90},
    "replication": {"factor": 2, "jump": 4},
    "retention": {"keepLast": 4, "keepEvery": 1000, "pinned": [300], "dryRun": True},
    "verification": {"deep": True},
}


def _state(**ckpt: object) -> GlobalState:
    return GlobalState(ConfigContainer(checkpoint=CheckpointConfig(**ckpt)))  # type: ignore[arg-type]


def test_every_spec_field_lands_in_the_live_config_with_its_source() -> None:
    state = _state(save="/ckpt", save_interval=1000, most_recent_k=-1)
    script = ScriptPolicy.of(state.cfg.checkpoint)
    resolution = resolve(SPEC, {}, 7, script)
    assert resolution.problems == ()
    apply_policy(state, resolve({}, {}, 0, script).policy, resolution.policy)
    ckpt = state.cfg.checkpoint
    assert (ckpt.save_interval, ckpt.non_persistent_save_interval) == (500, 50)
    assert (ckpt.non_persistent_ckpt_type, ckpt.non_persistent_local_ckpt_dir) == (
        "local",
        "/local/cairn",
    )
    assert (ckpt.async_save, ckpt.use_persistent_ckpt_worker) == (True, False)
    assert (ckpt.replication, ckpt.replication_factor, ckpt.replication_jump) == (True, 2, 4)
    assert ckpt.most_recent_k == 4 and ckpt.verify_integrity is True
    assert resolution.policy.save_stall_seconds == 90
    assert set(resolution.policy.sources.values()) == {"spec"}


def test_unset_fields_leave_the_scripts_values() -> None:
    state = _state(
        save="/ckpt", save_interval=1000, async_save=True, most_recent_k=5, verify_integrity=True
    )
    script = ScriptPolicy.of(state.cfg.checkpoint)
    policy = resolve({"save": {"interval": 200}}, {}, 2, script).policy
    assert policy.save_interval == 200 and policy.sources["save_interval"] == "spec"
    assert policy.async_save is True and policy.sources["async_save"] == "script"
    assert policy.verify_deep is True and policy.sources["verify_deep"] == "script"
    # Retention is the documented exception: keepLast has a CRD default, so the spec governs.
    assert policy.keep_last == DEFAULT_KEEP_LAST and policy.sources["keep_last"] == "spec"


def test_verification_deep_reaches_the_gc_job() -> None:
    spec = read_spec({**SPEC, "storage": {"persistent": {"path": "/ckpt"}}})
    view = plan_from_status(RetentionSpec.from_spec(SPEC), {}, resume_iteration=None)
    assert "--deep" in retention_command("/ckpt", spec.retention, view, deep=spec.verify_deep)
    shallow = read_spec({"storage": {"persistent": {"path": "/ckpt"}}})
    assert "--deep" not in retention_command(
        "/ckpt", shallow.retention, view, deep=shallow.verify_deep
    )
