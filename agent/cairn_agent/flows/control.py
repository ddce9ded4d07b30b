"""The job follows its Checkpoint: one agreement per step boundary, on every rank at once.

Ranks must switch policy at the same step, or their collectives deadlock (a rank that decides
to save while another does not hangs both). So at each step boundary (the training loop's call
of ``maybe_finalize_async_save`` or :func:`cairn_agent.checkpointing.save_due`):

1. Rank 0 looks at its watch of the Checkpoint (``cluster.watch``; a background thread, never
   waited on) and bumps a local policy version when the spec, its generation or the operator's
   published intervals changed. Every rank notes whether it was asked to stop (SIGTERM) and
   whether its async save is stalled.
2. One all-reduce (MAX) of ``[policy version, stop, stalled]`` — three integers — tells every
   rank all three facts. It is offered at one boundary and read at the next (a non-blocking
   all-reduce on a private gloo group, done while the step computes): every rank acts on the
   same facts at the same step, one step after they were offered, and the per-step cost is
   launching and collecting it. The first agreement of a run is blocking.
3. Only when the version moved, rank 0 resolves the effective policy (``resource.policy``) and
   broadcasts it; every rank applies it to the live ``CheckpointConfig`` (Megatron-Bridge's loop
   reads ``save_interval`` from it every step) and rank 0 reports it in
   ``status.appliedPolicy``.

Nothing here raises into training: the watch and the reporter swallow API failures, and a
policy the job cannot apply is reported, never applied halfway.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import threading
import time
from collections import deque
from typing import Any

from cairn_agent.cluster import reporting
from cairn_agent.engine import dist
from cairn_agent.engine.collectives import LaggedMax
from cairn_agent.resource import contract, save_request
from cairn_agent.resource.policy import (
    EffectivePolicy,
    PolicyProblem,
    Resolution,
    ScriptPolicy,
    resolve,
)
from cairn_agent.resource.times import now_time
from cairn_agent.state.run import RetentionOverride, run_of
from cairn_agent.state.train import GlobalState

logger = logging.getLogger(__name__)

_STEP_SAMPLES = 32
AGREE_EVERY_ENV = "CAIRN_AGREE_EVERY_STEPS"
"""Fixes the agreement period in steps (otherwise chosen from measured costs)."""
_OVERHEAD_FRACTION = 0.005
_MAX_AGREEMENT_GAP_S = 1.0
_MAX_PERIOD = 1000
_FIRST_SYNC_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepDecision:
    """What every rank agreed at one step boundary."""

    policy: EffectivePolicy
    save_request: str | None
    """A ``spec.saveNow`` request id to answer with a persistent save now, if any."""
    stop: bool
    """Some rank was asked to stop (SIGTERM): save and exit."""
    stalled: bool
    """Some rank's async save has been in flight longer than ``saveStallSeconds``."""
    retention_changed: bool = False
    """The retention policy changed at this boundary: apply it now, not only after a save."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Adopted:
    resolution: Resolution
    handled_request: str | None


class Control:
    """Per-run control state (kept in ``RunState.control``); one per process."""

    def __init__(self, state: Any) -> None:
        self._script = ScriptPolicy.of(state.cfg.checkpoint)
        self._agreement = LaggedMax()  # collective: every rank creates its Control alike
        self._every = 1
        self._until_next = 0
        self._agreement_s: float | None = None
        self._cairn_state = isinstance(state, GlobalState)
        self.resolution = resolve({}, {}, 0, self._script)
        self._applied_version = 0
        self._local_version = 0
        self._key: tuple[Any, ...] | None = None
        self.handled_request: str | None = None
        self.stop_requested = threading.Event()
        self.handler_installed = False
        self.stop_deadline: float | None = None
        """Monotonic time by which a final save must be committed (set by the SIGTERM handler)."""
        self._watch: Any = None
        self._last_boundary: float | None = None
        self._step_times: deque[float] = deque(maxlen=_STEP_SAMPLES)
        self._last_step: int | None = None
        self.last_decision: StepDecision | None = None
        self.saved_during_step = False
        self.saved_at: int | None = None
        """The step at which Cairn itself saved (answering the cluster), if any."""

    # --- rank 0: the watch --------------------------------------------------------------------
    def start_watch(self, state: Any) -> None:
        """Rank 0: follow the Checkpoint through the reporter's API client (no-op elsewhere)."""
        target = reporting.reporter(state)
        if target is None or target.api_client is None or self._watch is not None:
            return
        from cairn_agent.cluster.watch import CheckpointWatch

        self._watch = CheckpointWatch.for_ref(target.api_client, target.checkpoint_ref).start()
        # The spec should govern from the first step: give the first list a moment (bounded;
        # an unreachable API server only delays the spec to a later boundary).
        self._watch.wait_for_version(0, timeout=_FIRST_SYNC_S)

    def stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _poll(self) -> int:
        """Rank 0: the local policy version, bumped when what the policy depends on changed."""
        snapshot = self._watch.snapshot() if self._watch is not None else None
        if snapshot is None or not snapshot.exists:
            return self._local_version
        adaptive = snapshot.status.get(contract.ADAPTIVE_INTERVAL)
        key = (snapshot.uid, snapshot.generation, repr(adaptive), repr(snapshot.spec))
        if key != self._key:
            self._key = key
            self._local_version += 1
        return self._local_version

    # --- every rank: the boundary -------------------------------------------------------------
    def boundary(self, state: Any) -> StepDecision:
        """COLLECTIVE: agree on the policy, stop and stall flags at this step boundary."""
        step = int(state.train_state.step)
        if self.last_decision is not None and step == self._last_step:
            return self.last_decision  # already agreed at this step (every rank caches alike)
        self._measure_step(step)
        if self._last_step is not None and self._until_next > 0:
            self._until_next -= 1  # the same count on every rank: no agreement at this step
            return self._decide(state, step, stop=False, stalled=False, retention_changed=False)
        started = time.monotonic()
        agreed = self._agree(state)
        self._agreement_s = time.monotonic() - started
        self._every = max(1, agreed[3])
        self._until_next = self._every - 1
        retention_changed = False
        if agreed[0] != self._applied_version:
            retention_changed = self._adopt(state, agreed[0])
        return self._decide(
            state,
            step,
            stop=bool(agreed[1]),
            stalled=bool(agreed[2]),
            retention_changed=retention_changed,
        )

    def _agree(self, state: Any) -> list[int]:
        """This boundary's agreed ``[version, stop, stalled, next period]`` (see the module)."""
        coordinator = dist.get_rank() == 0
        offer = [
            self._poll() if coordinator else 0,
            int(self.stop_requested.is_set()),
            self._stalled(state),
            self._next_period() if coordinator else 0,
        ]
        # The first agreement of a run is blocking (the spec applies before the load); later
        # ones act on the round offered at the previous agreement, which ran during the steps.
        agreed = None if self._last_step is None else self._agreement.exchange(offer)
        if agreed is None:
            agreed = self._agreement.exchange_now(offer)
            self._agreement.exchange(offer)  # primes the pipeline: the next agreement reads it
        return agreed

    def _next_period(self) -> int:
        """Rank 0: agree every K steps, K such that agreeing costs at most 0.5% of step time.

        On real training steps (seconds) K is 1; on tiny steps agreeing every step would show.
        K is capped so that K steps take at most ``_MAX_AGREEMENT_GAP_S`` (an edit or SIGTERM
        is acted on within that). ``CAIRN_AGREE_EVERY_STEPS`` fixes K (tests, debugging).
        """
        fixed = os.environ.get(AGREE_EVERY_ENV, "").strip()
        if fixed.isdigit() and int(fixed) >= 1:
            return int(fixed)
        step = self.step_time_s()
        if not step or self._agreement_s is None:
            return 1
        wanted = math.ceil(self._agreement_s / (_OVERHEAD_FRACTION * step))
        return max(1, min(wanted, int(_MAX_AGREEMENT_GAP_S / step), _MAX_PERIOD))

    def _decide(
        self, state: Any, step: int, *, stop: bool, stalled: bool, retention_changed: bool
    ) -> StepDecision:
        request = self.resolution.policy.save_request
        due = request if request is not None and request != self.handled_request else None
        decision = StepDecision(
            policy=self.resolution.policy,
            save_request=due,
            stop=stop,
            stalled=stalled,
            retention_changed=retention_changed,
        )
        self.last_decision, self._last_step = decision, step
        return decision

    def _stalled(self, state: Any) -> int:
        queue = getattr(state, "_async_calls_queue", None)
        if queue is None:
            return 0
        return int(queue.oldest_in_flight_s() > self.resolution.policy.save_stall_seconds)

    def _adopt(self, state: Any, version: int) -> bool:
        """Apply the coordinator's resolution; True when the retention policy changed."""
        adopted: _Adopted | None = None
        if dist.get_rank() == 0:
            adopted = self._resolve_on_coordinator()
        adopted = dist.broadcast_object(adopted)
        previous = self.resolution.policy
        self.resolution, self._applied_version = adopted.resolution, version
        if adopted.handled_request is not None:
            self.handled_request = adopted.handled_request
        apply_policy(state, previous, self.resolution.policy)
        self._report_applied(state)
        return _retention_of(previous) != _retention_of(self.resolution.policy)

    def _resolve_on_coordinator(self) -> _Adopted:
        snapshot = self._watch.snapshot() if self._watch is not None else None
        if snapshot is None or not snapshot.exists:
            return _Adopted(resolution=self.resolution, handled_request=None)
        resolution = _within_capabilities(
            resolve(
                snapshot.spec,
                snapshot.status,
                snapshot.generation,
                self._script,
                self.resolution.policy,
            ),
            self._cairn_state,
            self.resolution.policy,
        )
        # A request answered before this process started (by a save it asked for, or by the
        # SIGTERM save that ended the previous generation) is not answered again.
        done = save_request.answered(snapshot.spec, snapshot.status)
        handled = save_request.requested(snapshot.spec) if done else None
        return _Adopted(resolution=resolution, handled_request=handled)

    def _report_applied(self, state: Any) -> None:
        policy, problems = self.resolution.policy, self.resolution.problems
        logger.info(
            "rank %d: applying Checkpoint spec generation %d (%s)",
            dist.get_rank(),
            policy.generation,
            ", ".join(f"{k} from {v}" for k, v in sorted(policy.sources.items())),
        )
        for problem in problems:
            logger.error(
                "rank %d: cannot apply %s: %s", dist.get_rank(), problem.field, problem.message
            )
        applied = {
            "observedGeneration": policy.generation,
            **policy.to_status(),
            "problems": [p.to_status() for p in problems],
            "appliedAt": now_time(),
        }
        reporting.fields(state, {contract.APPLIED_POLICY: applied})

    # --- measurements for the adaptive interval -----------------------------------------------
    def _measure_step(self, step: int) -> None:
        now = time.monotonic()
        if (
            self._last_boundary is not None
            and not self.saved_during_step
            and step != self._last_step
        ):
            self._step_times.append(now - self._last_boundary)
        self._last_boundary, self.saved_during_step = now, False

    def step_time_s(self) -> float | None:
        """Median wall time of one training step, steps with a save excluded."""
        return statistics.median(self._step_times) if self._step_times else None


def _within_capabilities(
    resolution: Resolution, cairn_state: bool, previous: EffectivePolicy
) -> Resolution:
    """What this job cannot do is kept at its previous value and reported, never half-applied."""
    policy = resolution.policy
    if cairn_state or not policy.async_save or previous.async_save:
        return resolution
    problem = PolicyProblem(
        field="spec.asyncWorker.enabled",
        message="this job saves through Megatron-Bridge's own GlobalState, whose async queue is "
        "not Cairn's worker: it keeps saving synchronously; use cairn_agent's GlobalState or "
        "checkpoint.custom_manager_class: cairn_agent.bridge.CairnCheckpointManager",
    )
    sources = dict(policy.sources) | {"async_save": previous.sources.get("async_save", "script")}
    kept = dataclasses.replace(policy, async_save=False, sources=sources)
    return Resolution(policy=kept, problems=(*resolution.problems, problem))


def _retention_of(policy: EffectivePolicy) -> tuple[Any, ...]:
    return (policy.keep_last, policy.keep_every, policy.pinned, policy.retention_dry_run)


def control_of(state: Any) -> Control | None:
    """The run's :class:`Control` (created on first use), or None when nothing governs the job.

    It exists when the job names a Checkpoint (``CAIRN_CHECKPOINT``) or its config asks for a
    save on SIGTERM; both are the same on every rank, so every rank joins the same agreements.
    """
    import os

    run = run_of(state)
    if run.control is None:
        named = bool(os.environ.get(contract.ENV_CHECKPOINT))
        if not named and not getattr(state.cfg.checkpoint, "save_on_sigterm", False):
            return None
        run.control = Control(state)
        if named:
            run.control.start_watch(state)
    control: Control = run.control
    return control


def apply_policy(state: Any, previous: EffectivePolicy, policy: EffectivePolicy) -> None:
    """Make the live config and the run follow ``policy`` (every rank, same step)."""
    ckpt = state.cfg.checkpoint
    ckpt.save_interval = policy.save_interval
    ckpt.non_persistent_save_interval = policy.non_persistent_save_interval
    ckpt.non_persistent_ckpt_type = policy.non_persistent_type
    ckpt.non_persistent_local_ckpt_dir = policy.local_dir
    ckpt.replication = policy.replication_factor > 1
    ckpt.replication_factor = policy.replication_factor
    ckpt.replication_jump = policy.replication_jump
    ckpt.most_recent_k = policy.keep_last if policy.keep_last is not None else -1
    if hasattr(ckpt, "verify_integrity"):
        ckpt.verify_integrity = policy.verify_deep
    run_of(state).retention = RetentionOverride(
        keep_last=policy.keep_last,
        keep_every=policy.keep_every,
        pinned=policy.pinned,
        dry_run=policy.retention_dry_run,
    )
    _apply_async(state, previous, policy)


def _apply_async(state: Any, previous: EffectivePolicy, policy: EffectivePolicy) -> None:
    ckpt = state.cfg.checkpoint
    changed = (previous.async_save, previous.persistent_worker) != (
        policy.async_save,
        policy.persistent_worker,
    )
    if changed and callable(getattr(state, "close_async_queue", None)):
        # Drain first: the save in flight commits under the policy it was started with; the
        # next save uses the new mode (a new queue is created with the new worker lifetime).
        state.close_async_queue()
        logger.info(
            "rank %d: async saves %s (worker %s)",
            dist.get_rank(),
            "on" if policy.async_save else "off",
            "persistent" if policy.persistent_worker else "per save",
        )
    ckpt.async_save = policy.async_save
    ckpt.use_persistent_ckpt_worker = policy.persistent_worker
