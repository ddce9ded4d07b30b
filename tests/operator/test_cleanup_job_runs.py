"""``kubectl delete`` of a ``deletionPolicy: Delete`` Checkpoint completes in the sandbox.

The sandbox runs the operator's clean-up Job (``cairn gc <root> --delete-all``) as a local
process on the directory mapped to the Checkpoint's PVC, so the finalizer is released only after
the data is really gone, as on a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn_agent.storage import layout
from cairn_operator.run import run_in_thread
from cairn_operator.testing import JobSettings, Sandbox, SandboxApiError

from tests.operator.conftest import FAST, ShiftedClock, checkpoint, get_when, wait_events, wait_for
from tests.shipping.fake_checkpoints import make_root

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The local directory standing in for PVC ``ckpt-pvc`` (mounted at /ckpt in the Job)."""
    return tmp_path / "pvc"


@pytest.fixture
def cluster(volume: Path, clock: ShiftedClock) -> Iterator[Sandbox]:
    jobs = JobSettings(claims={"ckpt-pvc": volume}, retry_delay_s=0.1, timeout_s=120)
    with Sandbox(jobs=jobs) as sandbox, run_in_thread(sandbox.url, settings=FAST, clock=clock):
        yield sandbox


def _kubectl(sandbox: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(sandbox.kubeconfig), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _has_finalizer(sandbox: Sandbox, name: str) -> None:
    get_when(
        sandbox, name, lambda o: "cairn.dev/cleanup" in (o["metadata"].get("finalizers") or ())
    )


def test_kubectl_delete_runs_the_cleanup_job_and_the_checkpoint_goes(
    cluster: Sandbox, volume: Path
) -> None:
    root = make_root(volume / "wipe", [100, 200])
    cluster.create(checkpoint("wipe", deletionPolicy="Delete"))
    _has_finalizer(cluster, "wipe")

    deleted = _kubectl(cluster, "delete", "ckpt", "wipe", "--timeout=60s")

    (job,) = cluster.list("jobs", "default", label_selector="cairn.dev/gc-for=wipe")
    assert deleted.returncode == 0, (deleted.stderr, cluster.job_output(job["metadata"]["name"]))
    assert 'checkpoint.cairn.dev "wipe" deleted' in deleted.stdout
    with pytest.raises(SandboxApiError) as gone:
        cluster.get("checkpoints", "wipe")
    assert gone.value.status == 404
    assert not layout.iteration_dir(root, 100).exists()
    assert not layout.iteration_dir(root, 200).exists()
    assert not layout.tracker_path(root).exists()
    job = cluster.get("jobs", job["metadata"]["name"])
    assert job["status"]["succeeded"] == 1
    assert "delete-all: 2 checkpoint(s)" in (cluster.job_output(job["metadata"]["name"]) or "")


def test_failed_cleanup_job_keeps_the_finalizer_and_the_data(
    cluster: Sandbox, volume: Path
) -> None:
    root = make_root(volume / "stuck", [100])
    layout.generation_path(root).write_text("not-a-number")  # `cairn gc` refuses: corrupt fence
    cluster.create(checkpoint("stuck", deletionPolicy="Delete"))
    _has_finalizer(cluster, "stuck")

    cluster.delete("checkpoints", "stuck")

    wait_events(cluster, "stuck", "CleanupFailed")
    (job,) = cluster.list("jobs", "default", label_selector="cairn.dev/gc-for=stuck")
    failed = wait_for(
        lambda: [c for c in job_conditions(cluster, job["metadata"]["name"]) if c == "Failed"],
        what="the Failed condition",
    )
    assert failed == ["Failed"]
    assert cluster.get("checkpoints", "stuck")["metadata"]["finalizers"] == ["cairn.dev/cleanup"]
    assert layout.iteration_dir(root, 100).is_dir()


def job_conditions(sandbox: Sandbox, name: str) -> list[str]:
    status = sandbox.get("jobs", name).get("status") or {}
    return [c["type"] for c in status.get("conditions") or () if c["status"] == "True"]
