"""Cairn's Kubernetes test kit: an API server emulator for tests and ``cairn cluster`` (torch-free).

What ``kopf.testing`` is for kopf operators: ``Sandbox`` serves :class:`CairnEmulator` (KMock's
emulator, extended where a real API server differs) over HTTP with the Checkpoint CRD
installed, and, given ``JobSettings``, runs the Jobs created in it as local processes;
``validate_checkpoint`` and ``prune_checkpoint`` check objects against the CRD the way the API
server would. Product code never imports it. It needs the ``sandbox`` extra
(``pip install 'cairn[sandbox]'``); without it, importing the kit raises
``SandboxNotInstalledError`` saying so.
"""

from cairn_agent.errors import CairnError

# Top-level modules the kit imports that the base install lacks (the `sandbox` extra).
_EXTRA_MODULES = frozenset({"kmock", "jsonpatch", "attrs", "celpy", "jsonschema"})


class SandboxNotInstalledError(CairnError, ImportError):
    """A package of the ``sandbox`` extra is missing."""


try:
    from cairn_operator.testing.emulator import CairnEmulator
    from cairn_operator.testing.jobs import JobSettings
    from cairn_operator.testing.sandbox import (
        Sandbox,
        SandboxApiError,
        kubeconfig_text,
        serve_forever,
    )
    from cairn_operator.testing.schema import (
        DEFAULT_CRD_PATH,
        prune_checkpoint,
        pruned_checkpoint_fields,
        validate_checkpoint,
    )
except ModuleNotFoundError as _missing:
    if (_missing.name or "").partition(".")[0] not in _EXTRA_MODULES:
        raise
    raise SandboxNotInstalledError(
        f"the Kubernetes sandbox needs packages that are not installed (no module "
        f"{_missing.name!r}): pip install 'cairn[sandbox]'",
        name=_missing.name,
    ) from None

__all__ = [
    "DEFAULT_CRD_PATH",
    "CairnEmulator",
    "JobSettings",
    "Sandbox",
    "SandboxApiError",
    "SandboxNotInstalledError",
    "kubeconfig_text",
    "prune_checkpoint",
    "pruned_checkpoint_fields",
    "serve_forever",
    "validate_checkpoint",
]
