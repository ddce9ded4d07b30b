"""The Checkpoint custom resource contract shared by the agent, the operator and the tools.

Fixed by DESIGN.md §2 and §4. ``status`` has two writers on disjoint top-level keys, so JSON
merge patches from one never clobber the other: the agent (training rank 0) writes only
``AGENT_STATUS_KEYS``; the operator writes only ``OPERATOR_STATUS_KEYS``. Torch-free.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "cairn.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "Checkpoint"
PLURAL: Final = "checkpoints"
SINGULAR: Final = "checkpoint"
SHORT_NAME: Final = "ckpt"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# Environment a training pod gets: "<namespace>/<name>" of its Checkpoint.
ENV_CHECKPOINT: Final = "CAIRN_CHECKPOINT"
# Restart generation of the pod (e.g. from JobSet's restart-attempt via the downward API).
ENV_GENERATION: Final = "CAIRN_GENERATION"

# Pods of a training job carry this label, valued with the Checkpoint's name.
LABEL_CHECKPOINT: Final = f"{GROUP}/checkpoint"
FINALIZER: Final = f"{GROUP}/cleanup"

# --- status keys written by the agent (rank 0) --------------------------------------------------
SAVED_ITERATIONS: Final = "savedIterations"  # bounded list of {iteration, committedAt, bytes, files, manifestDigest, verified}
LATEST_COMMITTED: Final = "latestCommittedIteration"  # int
LATEST_LOCAL: Final = "latestLocalIteration"  # int, node-local tier
# {iteration, replicas, replicationFactor, nodes, nodeCount, bytesPerRank, updatedAt, problem}
LOCAL_TIER: Final = "localTier"
LAST_SAVE_TIME: Final = "lastSaveTime"  # RFC 3339, time of the latest commit
SAVE_IN_PROGRESS: Final = "saveInProgress"  # {iteration, phase, startedAt, async} or null
ASYNC_WORKER: Final = "asyncWorker"  # {state, heartbeatTime, pid}
LAST_RESUME: Final = "lastResume"  # {iteration, source, time, generation, tier, reason}
CORRUPT_ITERATIONS: Final = "corruptIterations"  # bounded list of {iteration, file, check, time}
AGENT_GENERATION: Final = "agentGeneration"  # int, restart generation of the reporting agent
# {stepTimeSeconds, persistent: {recentStallSeconds: [...]}, nonPersistent: {recentStallSeconds}}:
# what the operator's adaptive save interval reads (newest sample last, at most MAX_SAVE_STATS).
SAVE_STATS: Final = "saveStats"
# {observedGeneration, values: {...}, sources: {field: spec|script|adaptive}, problems: [...],
# appliedAt}: the policy the running job applies (resource/policy.py), and what it could not.
APPLIED_POLICY: Final = "appliedPolicy"
# {requestId, reason, requestedIteration, iteration, committedAt, saveSeconds, outcome, message}:
# the job's answer to the newest spec.saveNow request (committed, or why not).
LAST_SAVE_REQUEST: Final = "lastSaveRequest"

AGENT_STATUS_KEYS: Final = frozenset(
    {
        SAVED_ITERATIONS,
        LATEST_COMMITTED,
        LATEST_LOCAL,
        LOCAL_TIER,
        LAST_SAVE_TIME,
        SAVE_IN_PROGRESS,
        ASYNC_WORKER,
        LAST_RESUME,
        CORRUPT_ITERATIONS,
        AGENT_GENERATION,
        SAVE_STATS,
        APPLIED_POLICY,
        LAST_SAVE_REQUEST,
    }
)

# --- status keys written by the operator --------------------------------------------------------
CONDITIONS: Final = "conditions"
PHASE: Final = "phase"
RESUME_FROM: Final = "resumeFrom"  # {iteration, path, source, reason}
RETENTION: Final = "retention"  # {retainedCount, retainedBytes, plannedDeletions, lastRun, dryRun}
RESTARTS: Final = "restarts"  # {count, lastRestartTime, lastResumedIteration}
OBSERVED_GENERATION: Final = "observedGeneration"
# {state, message, computedAt, persistent, nonPersistent, inputs, observation}: spec.save.policy
# Adaptive's published intervals and their inputs (cairn_operator/reconcile/adaptive.py).
ADAPTIVE_INTERVAL: Final = "adaptiveInterval"
# {reason, announcedAt, deadline, requestId, signals, iteration, saveSeconds, outcome, message}:
# the newest preemption the operator saw announced and the job's answer to its save request
# (cairn_operator/reconcile/preemption.py).
LAST_PREEMPTION: Final = "lastPreemption"

OPERATOR_STATUS_KEYS: Final = frozenset(
    {
        CONDITIONS,
        PHASE,
        RESUME_FROM,
        RETENTION,
        RESTARTS,
        OBSERVED_GENERATION,
        ADAPTIVE_INTERVAL,
        LAST_PREEMPTION,
    }
)

# Bounds that keep the object far below etcd's limits (DESIGN.md §4: well under 100 KiB).
MAX_SAVED_ITERATIONS: Final = 32
MAX_CORRUPT_ITERATIONS: Final = 16
MAX_SAVE_STATS: Final = 16  # recentStallSeconds entries per tier

# Condition types the operator sets.
COND_VALID: Final = "Valid"
COND_POLICY_APPLIED: Final = "PolicyApplied"
COND_RESUME_POINT_SELECTED: Final = "ResumePointSelected"
COND_DEGRADED: Final = "Degraded"
COND_PREEMPTION_SAFE: Final = "PreemptionSafe"

# The vocabulary of the agent's entries (worker states, save phases) and their typed readers and
# writers: ``cairn_agent.resource.status``.


def parse_checkpoint_ref(value: str) -> tuple[str, str]:
    """Split ``CAIRN_CHECKPOINT`` (``<namespace>/<name>``) into its parts."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(
            f"{ENV_CHECKPOINT}={value!r} is not '<namespace>/<name>'; set it to the Checkpoint "
            "resource of this training job"
        )
    return namespace, name
