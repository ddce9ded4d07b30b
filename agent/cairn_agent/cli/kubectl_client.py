"""Talk to the API server through the user's own ``kubectl``.

Shelling out (instead of a Kubernetes client library) means the plugin honours exactly what
``kubectl`` honours: the kubeconfig, its current context and namespace, exec credential
plugins, proxies. Only the flags in ``PASS_THROUGH_FLAGS`` are forwarded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cairn_agent.errors import CairnError
from cairn_agent.resource import contract

RESOURCE = f"{contract.PLURAL}.{contract.GROUP}"
# kubectl global flags that take a value, forwarded to every kubectl call.
PASS_THROUGH_FLAGS = ("--kubeconfig", "--context", "--cluster", "--user", "--request-timeout")
_SHORT_NAMESPACE = "-n"
_CONFLICT_MARKERS = ("Conflict", "the object has been modified")
_MAX_ATTEMPTS = 3


class KubectlError(CairnError):
    """``kubectl`` failed; the message is its own error text."""


class ConflictError(KubectlError):
    """The object changed between our read and our write (HTTP 409)."""


@dataclass(frozen=True, kw_only=True)
class KubectlFlags:
    """kubectl global flags given to the plugin, in front of or after its subcommand."""

    namespace: str | None = None
    """``-n/--namespace``; None uses the kubeconfig context's namespace."""
    all_namespaces: bool = False
    """``-A/--all-namespaces`` (only ``list`` uses it)."""
    passthrough: tuple[str, ...] = field(default_factory=tuple)
    """Other global flags, already as ``--flag=value`` words."""

    def args(self, *, namespaced: bool = True) -> list[str]:
        """The words to put on every kubectl command line."""
        words = list(self.passthrough)
        if self.all_namespaces and not namespaced:
            words.append("--all-namespaces")
        elif self.namespace:
            words.append(f"--namespace={self.namespace}")
        return words


def split_global_flags(argv: Sequence[str]) -> tuple[KubectlFlags, list[str]]:
    """Pull kubectl's global flags out of ``argv`` wherever they are; return the rest."""
    rest: list[str] = []
    found: dict[str, Any] = {"namespace": None, "all_namespaces": False, "passthrough": []}
    words = list(argv)
    while words:
        word = words.pop(0)
        if not _take_flag(word, words, found):
            rest.append(word)
    flags = KubectlFlags(
        namespace=found["namespace"],
        all_namespaces=found["all_namespaces"],
        passthrough=tuple(found["passthrough"]),
    )
    return flags, rest


def _take_flag(word: str, words: list[str], found: dict[str, Any]) -> bool:
    if word in ("-A", "--all-namespaces"):
        found["all_namespaces"] = True
        return True
    name, has_value, value = word.partition("=")
    if name in ("--namespace", _SHORT_NAMESPACE):
        found["namespace"] = value if has_value else _value_of(name, words)
        return True
    if word.startswith(_SHORT_NAMESPACE) and len(word) > 2 and not word.startswith("--"):
        found["namespace"] = word[2:]
        return True
    if name in PASS_THROUGH_FLAGS:
        found["passthrough"].append(f"{name}={value if has_value else _value_of(name, words)}")
        return True
    return False


def _value_of(name: str, words: list[str]) -> str:
    if not words:
        raise ValueError(f"flag {name} needs a value")
    return words.pop(0)


class Kubectl:
    """Checkpoint reads and patches through the ``kubectl`` binary."""

    def __init__(self, flags: KubectlFlags, binary: str | None = None) -> None:
        self.flags = flags
        self.binary = binary or os.environ.get("KUBECTL") or shutil.which("kubectl") or ""
        if not self.binary:
            raise KubectlError("kubectl is not on PATH; install it or set $KUBECTL to its path")

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """Every Checkpoint in the namespace (or all namespaces with ``-A``)."""
        result = self._json(["get", RESOURCE, "-o", "json"], namespaced=False)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def get_checkpoint(self, name: str) -> dict[str, Any]:
        """One Checkpoint by name."""
        return self._json(["get", RESOURCE, name, "-o", "json"])

    def patch_checkpoint(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the main resource (spec/metadata; status is the writers' own)."""
        argv = ["patch", RESOURCE, name, "--type=merge", "-p", json.dumps(patch), "-o", "json"]
        return self._json(argv)

    def update_spec(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Read, compute a spec merge patch with ``change(obj)``, write it guarded by the
        read's resourceVersion; on a conflict (someone wrote in between) read and try again."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            obj = self.get_checkpoint(name)
            patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}}
            patch["spec"] = change(obj)
            try:
                return self.patch_checkpoint(name, patch)
            except ConflictError:
                if attempt == _MAX_ATTEMPTS:
                    raise
        raise KubectlError(f"could not update {name}")  # pragma: no cover - loop raises

    def _json(self, argv: list[str], *, namespaced: bool = True) -> dict[str, Any]:
        out = self._run(argv, namespaced=namespaced)
        try:
            parsed: dict[str, Any] = json.loads(out)
        except ValueError as exc:
            raise KubectlError(
                f"kubectl printed something that is not JSON: {out[:200]!r}"
            ) from exc
        return parsed

    def _run(self, argv: list[str], *, namespaced: bool) -> str:
        # Global flags after the verb: kubectl resolves plugins on any flag it does not know
        # as global (such as --all-namespaces) when placed before the verb.
        command = [self.binary, *argv, *self.flags.args(namespaced=namespaced)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            message = done.stderr.strip() or f"{' '.join(command)} exited {done.returncode}"
            if any(marker in message for marker in _CONFLICT_MARKERS):
                raise ConflictError(message)
            raise KubectlError(_clean(message))
        return done.stdout


def _clean(message: str) -> str:
    """kubectl's error text without its own ``error:`` prefix (ours adds one)."""
    for prefix in ("error: ", "Error from server ", "Error: "):
        message = message.removeprefix(prefix)
    return message.strip()
