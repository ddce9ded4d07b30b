"""The real kubectl binary against the sandbox: version, apply, get with printer columns, patch."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cairn_operator.testing import Sandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "checkpoints"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")


def kubectl(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _days_ago(days: int) -> str:
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days, minutes=1)
    return then.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def cluster() -> Sandbox:
    with Sandbox() as running:
        yield running  # type: ignore[misc]


def test_version_talks_to_the_server(cluster: Sandbox) -> None:
    result = kubectl(cluster, "version")
    assert result.returncode == 0, result.stderr
    assert "Server Version: v1.32" in result.stdout


def test_apply_examples_then_get_shows_printer_columns(cluster: Sandbox) -> None:
    applied = kubectl(cluster, "apply", "-f", str(EXAMPLES))
    assert applied.returncode == 0, applied.stderr
    assert "checkpoint.cairn.dev/llama-8b created" in applied.stdout
    cluster.patch(
        "ckpt",
        "llama-8b",
        {
            "status": {
                "latestCommittedIteration": 7000,
                "phase": "Ready",
                "resumeFrom": {"iteration": 5000},
                "lastSaveTime": _days_ago(3),
            }
        },
        subresource="status",
    )
    listed = kubectl(cluster, "get", "ckpt")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "NAME", "LATEST", "RESUME-FROM", "PHASE", "LAST-SAVE", "SPEC-GEN", "APPLIED-GEN", "AGE"
    ]  # fmt: skip
    llama = next(row.split() for row in rows if row.startswith("llama-8b"))
    assert llama[1:4] == ["7000", "5000", "Ready"]
    assert llama[4] == "3d"  # Last-Save rendered as an age, as the API server does
    # No job has applied the spec yet: SPEC-GEN 1 beside an empty APPLIED-GEN (a job lagging).
    assert llama[5] == "1" and len(llama) == 7
    assert listed.stderr == ""  # no discovery warnings (e.g. ambiguous short names)


def test_reapply_is_unchanged_and_edits_apply(cluster: Sandbox, tmp_path: Path) -> None:
    kubectl(cluster, "apply", "-f", str(EXAMPLES / "minimal.yaml"))
    again = kubectl(cluster, "apply", "-f", str(EXAMPLES / "minimal.yaml"))
    assert "unchanged" in again.stdout, again.stderr
    edited = (EXAMPLES / "minimal.yaml").read_text() + "  retention: {keepLast: 6}\n"
    (tmp_path / "edited.yaml").write_text(edited)
    assert kubectl(cluster, "apply", "-f", str(tmp_path / "edited.yaml")).returncode == 0
    assert cluster.get("ckpt", "minimal")["spec"]["retention"]["keepLast"] == 6


def test_invalid_patch_shows_the_rule_message(cluster: Sandbox) -> None:
    kubectl(cluster, "apply", "-f", str(EXAMPLES / "minimal.yaml"))
    result = kubectl(
        cluster,
        "patch",
        "ckpt",
        "minimal",
        "--type=merge",
        "-p",
        '{"spec":{"resume":{"policy":"Pinned"}}}',
    )
    assert result.returncode != 0
    assert "spec.resume.iteration is required when spec.resume.policy is Pinned" in result.stderr


def test_unknown_field_is_refused_by_kubectl_apply(cluster: Sandbox, tmp_path: Path) -> None:
    manifest = (EXAMPLES / "minimal.yaml").read_text().replace("name: minimal", "name: typo")
    (tmp_path / "typo.yaml").write_text(manifest + "  retension: {keepLast: 4}\n")
    result = kubectl(cluster, "apply", "-f", str(tmp_path / "typo.yaml"))
    assert result.returncode != 0 and 'unknown field "spec.retension"' in result.stderr


def test_get_crd_and_delete(cluster: Sandbox) -> None:
    crds = kubectl(cluster, "get", "crd")
    assert "checkpoints.cairn.dev" in crds.stdout, crds.stderr
    kubectl(cluster, "apply", "-f", str(EXAMPLES / "pinned-resume.yaml"))
    deleted = kubectl(cluster, "delete", "ckpt", "gpt-rollback")
    assert deleted.returncode == 0, deleted.stderr
    assert "gpt-rollback" not in kubectl(cluster, "get", "ckpt").stdout
