"""A Job's pod template as a local command: the sandbox's stand-in for a kubelet.

A sandbox has no container runtime, so the container's ``command`` + ``args`` run as a local
process (the image is ignored; the sandbox's own Python environment is the image). Volume mounts
become local directories, and every argument, ``env`` value and the ``workingDir`` that points
under a mount path is rewritten to the directory standing in for it:

- ``persistentVolumeClaim``: the directory the sandbox maps that claim name to
  (``JobSettings.claims``; ``cairn cluster --volume CLAIM=DIR``);
- ``hostPath``: the path itself (the sandbox's machine is the only node);
- ``emptyDir``: a fresh directory in the Job's scratch directory.

``subPath`` is honoured. Anything else a real kubelet would do (images, init containers,
``valueFrom``, other volume types, several containers) is refused with a ``PodSpecError`` that
says what, so the Job fails visibly instead of running something else than it asks for.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any


class PodSpecError(ValueError):
    """The pod template asks for something the sandbox cannot run locally."""


@dataclass(frozen=True, kw_only=True)
class LocalCommand:
    """What one pod of a Job runs here."""

    argv: tuple[str, ...]
    """The executable (resolved on ``PATH``) and its arguments, paths rewritten."""
    env: dict[str, str]
    """The environment: this process's, the venv's scripts first on ``PATH``, the container's."""
    cwd: Path
    """The working directory."""


def local_command(
    pod_spec: Mapping[str, Any], *, claims: Mapping[str, Path], scratch: Path
) -> LocalCommand:
    """The local command of a pod template's only container; ``PodSpecError`` if it has none.

    ``scratch`` holds the pod's ``emptyDir`` volumes and is its working directory by default."""
    container = _only_container(pod_spec)
    mounts = _mounts(container, pod_spec, claims, scratch)
    argv = [_rewrite(arg, mounts) for arg in [*container["command"], *container.get("args", ())]]
    env = _environment(container, mounts)
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise PodSpecError(f"executable {argv[0]!r} not found on PATH ({env['PATH']})")
    working_dir = container.get("workingDir")
    cwd = Path(_rewrite(str(working_dir), mounts)) if working_dir else scratch
    return LocalCommand(argv=(executable, *argv[1:]), env=env, cwd=cwd)


def _only_container(pod_spec: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = list(pod_spec.get("containers") or [])
    if len(containers) != 1 or pod_spec.get("initContainers"):
        raise PodSpecError(
            f"the sandbox runs pods of exactly one container and no init containers; "
            f"this one has {len(containers)} container(s)"
        )
    container: Mapping[str, Any] = containers[0]
    if not container.get("command"):
        raise PodSpecError(
            f"container {container.get('name')!r} has no command; the sandbox cannot run an "
            "image's entrypoint (set command)"
        )
    return container


def _mounts(
    container: Mapping[str, Any],
    pod_spec: Mapping[str, Any],
    claims: Mapping[str, Path],
    scratch: Path,
) -> list[tuple[str, Path]]:
    """(mount path, local directory), longest mount path first so nested mounts win."""
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or ()}
    mounts = []
    for mount in container.get("volumeMounts") or ():
        volume = volumes.get(mount.get("name"))
        if volume is None:
            raise PodSpecError(f"volumeMount {mount.get('name')!r} names no volume of the pod")
        local = _volume_dir(volume, claims, scratch)
        if mount.get("subPath"):
            local = local / str(mount["subPath"])
        mounts.append((str(PurePosixPath(str(mount["mountPath"]))), local))
    return sorted(mounts, key=lambda m: len(m[0]), reverse=True)


def _volume_dir(volume: Mapping[str, Any], claims: Mapping[str, Path], scratch: Path) -> Path:
    if "persistentVolumeClaim" in volume:
        claim = str(volume["persistentVolumeClaim"].get("claimName", ""))
        if claim not in claims:
            raise PodSpecError(
                f"PersistentVolumeClaim {claim!r} has no local directory in this sandbox "
                f"(map it: cairn cluster --volume {claim}=DIR)"
            )
        return Path(claims[claim])
    if "hostPath" in volume:
        return Path(str(volume["hostPath"]["path"]))
    if "emptyDir" in volume:
        local = scratch / "volumes" / str(volume["name"])
        local.mkdir(parents=True, exist_ok=True)
        return local
    raise PodSpecError(
        f"volume {volume.get('name')!r}: the sandbox maps only persistentVolumeClaim, hostPath "
        "and emptyDir volumes"
    )


def _rewrite(value: str, mounts: list[tuple[str, Path]]) -> str:
    """``value`` with a leading mount path (or one after ``--opt=``) replaced by its directory."""
    head, sep, tail = value.partition("=")
    if sep and not head.startswith("/"):
        return f"{head}={_rewrite(tail, mounts)}"
    for mount, local in mounts:
        if mount == "/":
            return str(local) + value if value.startswith("/") else value
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount) :]
    return value


def _environment(container: Mapping[str, Any], mounts: list[tuple[str, Path]]) -> dict[str, str]:
    # The sandbox's Python environment is the image: its scripts (`cairn`) come first on PATH.
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    for entry in container.get("env") or ():
        if "value" not in entry:
            raise PodSpecError(
                f"env {entry.get('name')!r} uses valueFrom, which the sandbox does not resolve"
            )
        env[str(entry["name"])] = _rewrite(str(entry["value"]), mounts)
    return env
