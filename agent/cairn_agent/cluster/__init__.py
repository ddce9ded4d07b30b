"""The agent's Kubernetes I/O (torch-free), through the official ``kubernetes`` client.

Rank 0 of a training job writes the agent-owned keys of its Checkpoint's ``status`` through
``StatusReporter`` and follows the Checkpoint's spec through ``CheckpointWatch``; neither ever
raises into or blocks training. ``new_api_client`` finds the API (server URL, kubeconfig,
in-cluster service account) and is meant to be shared by both.
"""

from cairn_agent.cluster.config import load_configuration, new_api_client
from cairn_agent.cluster.reporter import StatusReporter
from cairn_agent.cluster.watch import CheckpointWatch, WatchedCheckpoint

__all__ = [
    "CheckpointWatch",
    "StatusReporter",
    "WatchedCheckpoint",
    "load_configuration",
    "new_api_client",
]
