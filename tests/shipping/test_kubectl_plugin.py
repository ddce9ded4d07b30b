"""``kubectl cairn`` driven by the real ``kubectl`` binary against the Kubernetes sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cairn_operator.testing import Sandbox

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

NAMESPACE = "training"


def _ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _checkpoint(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "storage": {
                "persistent": {
                    "claimName": "ckpt-pvc",
                    "mountPath": "/checkpoints",
                    "path": f"/checkpoints/{name}",
                }
            },
            "save": {"interval": 100},
            "asyncWorker": {"enabled": True},
            "retention": {"keepLast": 2, "pinned": [100]},
        },
    }


def _status() -> dict[str, Any]:
    saved = [
        {
            "iteration": it,
            "committedAt": _ago(900 - it),
            "bytes": 1 << 20,
            "files": 5,
            "verified": it != 400,
        }
        for it in (100, 200, 300, 400)
    ]
    return {
        "savedIterations": saved,
        "latestCommittedIteration": 400,
        "lastSaveTime": _ago(500),
        "phase": "Degraded",
        "resumeFrom": {"iteration": 300, "source": "LatestVerified", "reason": "newest verified"},
        "restarts": {"count": 2, "lastRestartTime": _ago(3600), "lastResumedIteration": 200},
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "AgentSilent",
                "message": "no heartbeat for 300s",
                "lastTransitionTime": _ago(60),
            }
        ],
    }


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(namespaces=("default", NAMESPACE)) as running:
        running.create(_checkpoint("llama", NAMESPACE))
        running.patch(
            "checkpoints", "llama", {"status": _status()}, NAMESPACE, subresource="status"
        )
        running.create(_checkpoint("gpt", "default"))
        yield running


def _plugin(
    sandbox: Sandbox, *argv: str, env_kubeconfig: bool = False
) -> subprocess.CompletedProcess[str]:
    """``kubectl cairn ARGV`` with the kubeconfig as a flag after the plugin name, or in $KUBECONFIG."""
    env = dict(os.environ)
    words = ["kubectl", "cairn", *argv]
    if env_kubeconfig:
        env["KUBECONFIG"] = str(sandbox.kubeconfig)
    else:
        env.pop("KUBECONFIG", None)
        words.insert(2, f"--kubeconfig={sandbox.kubeconfig}")
    return subprocess.run(words, capture_output=True, text=True, env=env, timeout=60, check=False)


def _spec(sandbox: Sandbox, name: str = "llama") -> dict[str, Any]:
    spec: dict[str, Any] = sandbox.get("checkpoints", name, NAMESPACE)["spec"]
    return spec


def test_list_shows_latest_resume_point_phase_age_and_degraded_reason(sandbox: Sandbox) -> None:
    done = _plugin(sandbox, "list", "-n", NAMESPACE)

    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["NAME", "LATEST", "RESUME-FROM", "PHASE", "LAST-SAVE", "DEGRADED"]
    assert row.split() == ["llama", "400", "300", "Degraded", "8m", "AgentSilent"]


def test_list_all_namespaces_and_context_namespace_from_kubeconfig_env(sandbox: Sandbox) -> None:
    everywhere = _plugin(sandbox, "-A", "list")
    default_ns = _plugin(sandbox, "list", env_kubeconfig=True)

    assert everywhere.returncode == 0, everywhere.stderr
    rows = [line.split()[:2] for line in everywhere.stdout.splitlines()]
    assert rows == [["NAMESPACE", "NAME"], ["default", "gpt"], ["training", "llama"]]
    assert default_ns.returncode == 0, default_ns.stderr
    assert [line.split()[0] for line in default_ns.stdout.splitlines()] == ["NAME", "gpt"]


def test_describe_summarises_spec_saved_iterations_conditions_and_retention_plan(
    sandbox: Sandbox,
) -> None:
    done = _plugin(sandbox, "describe", "llama", "--namespace", NAMESPACE)

    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "/checkpoints/llama on PVC ckpt-pvc" in text
    assert "keep last 2" in text and "pinned [100]" in text
    assert "iteration 300 (LatestVerified): newest verified" in text
    assert "2 (last 60m ago, resumed from 200)" in text
    assert "AgentSilent" in text and "no heartbeat for 300s" in text
    plan = {
        line.split()[0]: line.split()[1]
        for line in text.split("Retention plan")[1].splitlines()[2:6]
    }
    assert plan == {"100": "keep", "200": "delete", "300": "keep", "400": "keep"}


def test_pin_and_unpin_patch_spec_retention_pinned(sandbox: Sandbox) -> None:
    pinned = _plugin(sandbox, "pin", "llama", "200", "-n", NAMESPACE)
    assert pinned.returncode == 0, pinned.stderr
    assert _spec(sandbox)["retention"]["pinned"] == [100, 200]
    assert _spec(sandbox)["retention"]["keepLast"] == 2  # the merge patch left the rest alone

    unpinned = _plugin(sandbox, "unpin", "llama", "100", "-n", NAMESPACE)
    assert unpinned.returncode == 0, unpinned.stderr
    assert _spec(sandbox)["retention"]["pinned"] == [200]

    missing = _plugin(sandbox, "unpin", "llama", "999", "-n", NAMESPACE)
    assert missing.returncode == 1
    assert "iteration 999 is not pinned" in missing.stderr
    assert _spec(sandbox)["retention"]["pinned"] == [200]


def test_resume_from_pins_an_iteration_and_latest_goes_back(sandbox: Sandbox) -> None:
    pinned = _plugin(sandbox, "resume-from", "llama", "200", "-n", NAMESPACE)
    assert pinned.returncode == 0, pinned.stderr
    assert _spec(sandbox)["resume"] == {"policy": "Pinned", "iteration": 200}

    unknown = _plugin(sandbox, "resume-from", "llama", "150", "-n", NAMESPACE)
    assert unknown.returncode == 0 and "not among the saved iterations" in unknown.stderr

    latest = _plugin(sandbox, "resume-from", "llama", "latest", "-n", NAMESPACE)
    assert latest.returncode == 0, latest.stderr
    assert _spec(sandbox)["resume"] == {"policy": "LatestVerified"}

    bad = _plugin(sandbox, "resume-from", "llama", "newest", "-n", NAMESPACE)
    assert bad.returncode == 1 and "'latest'" in bad.stderr


def test_verify_exits_2_only_when_the_agent_reported_corruption(sandbox: Sandbox) -> None:
    clean = _plugin(sandbox, "verify", "llama", "-n", NAMESPACE)
    assert clean.returncode == 0, clean.stderr
    assert "verified:   [100, 200, 300]" in clean.stdout and "unverified: [400]" in clean.stdout

    corrupt = {
        "iteration": 400,
        "file": "iter_0000400/__1_0.distcp",
        "check": "crc32 mismatch",
        "time": _ago(5),
    }
    sandbox.patch(
        "checkpoints",
        "llama",
        {"status": {"corruptIterations": [corrupt]}},
        NAMESPACE,
        subresource="status",
    )
    broken = _plugin(sandbox, "verify", "llama", "-n", NAMESPACE)

    assert broken.returncode == 2
    assert "iter_0000400/__1_0.distcp: crc32 mismatch" in broken.stdout
    sandbox.patch(
        "checkpoints",
        "llama",
        {"status": {"corruptIterations": None}},
        NAMESPACE,
        subresource="status",
    )


def test_errors_from_kubectl_are_one_clear_line(sandbox: Sandbox) -> None:
    done = _plugin(sandbox, "describe", "nope", "-n", NAMESPACE)

    assert done.returncode == 1
    assert (
        done.stderr.count("\n") == 1
        and "nope" in done.stderr
        and "not found" in done.stderr.lower()
    )


def test_flags_before_the_plugin_name_are_refused_by_kubectl_itself(sandbox: Sandbox) -> None:
    # Documented in the README: kubectl only hands flags placed after `cairn` to plugins.
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={Path(sandbox.kubeconfig)}", "cairn", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
