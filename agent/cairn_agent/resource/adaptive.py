"""The save intervals ``spec.save.policy: Adaptive`` publishes, as the job should read them.

The operator writes ``status.adaptiveInterval.<tier>.intervalSteps`` (see
``cairn_operator.reconcile.adaptive``); under policy Adaptive those are the effective
``save.interval`` (tier ``persistent``) and ``save.nonPersistentInterval`` (tier
``nonPersistent``). A tier the operator has not published yet leaves the spec's interval, or
the training script's. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.spec import as_int, section


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishedIntervals:
    """What the operator published; None where it has not (or the policy is Fixed)."""

    persistent: int | None
    """Effective ``save.interval``."""
    non_persistent: int | None
    """Effective ``save.nonPersistentInterval``."""


def published_intervals(
    spec: Mapping[str, Any], status: Mapping[str, Any] | None
) -> PublishedIntervals:
    """The intervals to apply from ``status.adaptiveInterval`` under policy Adaptive."""
    if section(spec, "save").get("policy") != "Adaptive":
        return PublishedIntervals(persistent=None, non_persistent=None)
    published = (status or {}).get(contract.ADAPTIVE_INTERVAL)
    tiers = published if isinstance(published, Mapping) else {}

    def steps(tier: str) -> int | None:
        value = as_int(section(tiers, tier).get("intervalSteps"))
        return value if value is not None and value >= 1 else None

    return PublishedIntervals(persistent=steps("persistent"), non_persistent=steps("nonPersistent"))
