"""Agent -> cluster reporting (torch-free): the training job's rank 0 writes the agent-owned keys
of its Checkpoint's ``status`` through ``StatusReporter``; it never raises into training."""

from cairn_agent.cluster.config import ApiConfig, load_api_config
from cairn_agent.cluster.reporter import StatusReporter

__all__ = ["ApiConfig", "StatusReporter", "load_api_config"]
