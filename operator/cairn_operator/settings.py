"""Typed settings of the Cairn operator and how they map onto kopf's own settings.

``OperatorSettings`` is the one place for tunables (timer intervals, GC Job image, bounds);
``configure_kopf`` applies the parts kopf needs: Cairn's finalizer, progress and diff-base
storage in ``cairn.dev`` annotations (never in ``status``, whose keys the CRD schema fixes),
and posting of Kubernetes Events. Torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, cast

import kopf
from cairn_agent.resource import contract

DEFAULT_GC_IMAGE = "cairn:latest"
ENV_GC_IMAGE = "CAIRN_GC_IMAGE"
MAX_LISTED_DELETIONS = 64


MIN_API_CONNECTIONS = 16
"""The operator's watches (six kinds) plus room for its requests."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """Tunables of the Cairn operator (all durations in seconds)."""

    health_interval_s: float = 15.0
    """How often the health scanner re-judges heartbeat and save age of every Checkpoint."""
    gc_image: str = dataclasses.field(
        default_factory=lambda: os.environ.get(ENV_GC_IMAGE, DEFAULT_GC_IMAGE)
    )
    """Container image of GC Jobs; it must provide the ``cairn`` console script."""
    gc_service_account: str | None = None
    """Service account of GC Job pods; None uses the namespace's default."""
    gc_backoff_limit: int = 2
    """Retries of a failed GC Job pod before the Job is marked failed."""
    max_observed_pods: int = 64
    """Pods remembered per Checkpoint for restart counting (oldest gone pods are dropped)."""
    max_planned_deletions: int = 32
    """Longest ``status.retention.plannedDeletions`` list (the plan itself is never truncated)."""
    posting_events: bool = True
    """Post Kubernetes Events (ResumeFallback, SaveStalled, PodRestarted, ...)."""
    api_connections: int = 64
    """Most connections to the API server at once (``connection.bounded_session``); requests
    beyond it wait for a free one. Each of the operator's watches (Checkpoints, Pods, Jobs,
    Nodes, JobSets, Kueue Workloads) holds one for as long as it runs."""

    def __post_init__(self) -> None:
        if self.health_interval_s <= 0:
            raise ValueError(f"health_interval_s={self.health_interval_s} must be > 0 seconds")
        if not self.gc_image:
            raise ValueError(
                f"gc_image is empty; set it or the {ENV_GC_IMAGE} environment variable"
            )
        if self.gc_backoff_limit < 0:
            raise ValueError(f"gc_backoff_limit={self.gc_backoff_limit} must be >= 0")
        if self.api_connections < MIN_API_CONNECTIONS:
            raise ValueError(
                f"api_connections={self.api_connections} must be >= {MIN_API_CONNECTIONS}: the "
                "operator's watches hold one connection each and requests need the rest"
            )
        if self.max_observed_pods < 1:
            raise ValueError(f"max_observed_pods={self.max_observed_pods} must be >= 1")
        if not 1 <= self.max_planned_deletions <= MAX_LISTED_DELETIONS:
            raise ValueError(
                f"max_planned_deletions={self.max_planned_deletions} must be within 1.."
                f"{MAX_LISTED_DELETIONS} (the CRD's maxItems of status.retention.plannedDeletions)"
            )


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no diff base: Cairn has no change-detection handlers (every handler is level-
    triggered on watch events), so kopf's per-event deep copy of the object's essence is waste."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """Apply Cairn's choices to kopf's settings object (before the operator starts)."""
    # Cairn manages its own finalizer (handlers.cleanup); kopf's change-detection handlers,
    # which would add kopf's, are not used.
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=contract.GROUP
    )
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    kopf_settings.posting.enabled = ours.posting_events
    kopf_settings.posting.level = logging.INFO
    kopf_settings.posting.reporting_component = "cairn-operator"
    kopf_settings.peering.standalone = True
    kopf_settings.watching.connect_timeout = 10
    kopf_settings.watching.server_timeout = 300
    # Watch only the pods of training jobs and Cairn's clean-up Jobs, filtered by the API server:
    # an operator must not cache every pod of the cluster (memory grows with watched objects).
    # Retention Jobs are not watched (nothing waits for them; their names make them idempotent),
    # and at thousands of Checkpoints they outnumber the Checkpoints themselves.
    kopf_settings.watching.label_selectors["v1", "pods"] = contract.LABEL_CHECKPOINT
    kopf_settings.watching.label_selectors["batch", "jobs"] = f"{contract.GROUP}/gc-purpose=delete"
