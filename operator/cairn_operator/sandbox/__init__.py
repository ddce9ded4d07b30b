"""A Kubernetes API emulator for tests and the ``cairn cluster`` sandbox (torch-free).

``Sandbox`` serves :class:`CairnEmulator` (KMock's emulator, extended where a real API server
differs) over HTTP with the Checkpoint CRD installed; ``validate_checkpoint`` and
``prune_checkpoint`` check objects against the CRD the way the API server would.
"""

from cairn_operator.sandbox.emulator import CairnEmulator
from cairn_operator.sandbox.sandbox import Sandbox, SandboxApiError, kubeconfig_text, serve_forever
from cairn_operator.sandbox.schema import (
    DEFAULT_CRD_PATH,
    prune_checkpoint,
    pruned_checkpoint_fields,
    validate_checkpoint,
)

__all__ = [
    "DEFAULT_CRD_PATH",
    "CairnEmulator",
    "Sandbox",
    "SandboxApiError",
    "kubeconfig_text",
    "prune_checkpoint",
    "pruned_checkpoint_fields",
    "serve_forever",
    "validate_checkpoint",
]
