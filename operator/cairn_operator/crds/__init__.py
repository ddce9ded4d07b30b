"""The Checkpoint CRD, shipped inside the package (torch-free).

``crds/checkpoints.cairn.dev.yaml`` at the repository root is what the Helm chart and users
apply; this package carries a byte-identical copy (a test keeps them equal) so an installed
``cairn`` (``cairn cluster``, the test kit) finds the CRD without a source checkout.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

CHECKPOINT_CRD_FILE = "checkpoints.cairn.dev.yaml"


def checkpoint_crd() -> Traversable:
    """The packaged Checkpoint CRD manifest (``.read_text()`` gives its YAML)."""
    return files(__name__) / CHECKPOINT_CRD_FILE
