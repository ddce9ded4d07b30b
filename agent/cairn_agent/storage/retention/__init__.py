"""Retention: one pure planner, its disk view, its safe application (DESIGN.md §3 steps 5, 7).

- ``plan``: ``plan_retention``, the pure core — typed decisions from iteration numbers alone.
- ``disk``: ``plan_on_disk``, the view over a checkpoint root (in-job retention,
  non-persistent clean-up, ``cairn gc``). The view over a Checkpoint's status (operator,
  ``kubectl cairn``) is ``cairn_agent.resource.retention``; both call the same core.
- ``apply``: ``apply_retention``, which re-checks fence and tracker before every deletion.
- ``arguments``: a run as ``cairn gc`` arguments and back.

Torch-free.
"""

from cairn_agent.storage.retention.apply import apply_retention, delete_iterations
from cairn_agent.storage.retention.arguments import GcOptions
from cairn_agent.storage.retention.disk import DiskPlan, plan_on_disk
from cairn_agent.storage.retention.plan import (
    Action,
    Decision,
    Guards,
    Reason,
    RetentionPlan,
    RetentionPolicy,
    plan_retention,
)

__all__ = [
    "Action",
    "Decision",
    "DiskPlan",
    "GcOptions",
    "Guards",
    "Reason",
    "RetentionPlan",
    "RetentionPolicy",
    "apply_retention",
    "delete_iterations",
    "plan_on_disk",
    "plan_retention",
]
