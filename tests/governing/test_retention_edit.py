"""``spec.retention.keepLast`` lowered mid-run: the job deletes what ``cairn gc`` predicted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cairn_agent.storage.listing import committed_iterations
from cairn_operator.testing import Sandbox

from tests.conftest import REPO_ROOT
from tests.governing.conftest import plan_for
from tests.governing.steering import GovernedRun, applied_generation, same_on_every_rank
from tests.operator.conftest import checkpoint

NAME = "retention-edit"
CAIRN = REPO_ROOT / ".venv" / "bin" / "cairn"


def _gc_dry_run(root: Path, keep_last: int) -> dict[str, list[int]]:
    done = subprocess.run(
        [str(CAIRN), "gc", str(root), "--keep-last", str(keep_last), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    return {"keep": sorted(outcome["keep"]), "delete": sorted(outcome["delete"])}


def test_lowered_keep_last_deletes_what_gc_predicted(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.create(checkpoint(NAME, save={"interval": 2}, retention={"keepLast": 10}))
    root = tmp_path / "ckpt"
    # Saves at 2, 4, ..., 12, then none: only the policy change can delete anything after.
    plan = plan_for(
        sandbox,
        NAME,
        tmp_path,
        save_interval=2,
        save_until=12,
        pause_at=(12,),
        list_root=True,
        max_steps=15,
    )
    with GovernedRun(plan) as run:
        run.wait_paused()
        assert committed_iterations(root) == [2, 4, 6, 8, 10, 12]
        predicted = _gc_dry_run(root, 2)
        assert predicted["delete"], "the dry run predicts no deletion: nothing to test"
        assert committed_iterations(root) == [2, 4, 6, 8, 10, 12], "the dry run deleted"

        sandbox.patch("checkpoints", NAME, {"spec": {"retention": {"keepLast": 2}}})
        # Rank 0 saw the edit: the next boundary (13) offers it, the one after (14) applies it.
        run.resume(see_generation=2)
        records = run.records()

    view = same_on_every_rank(records, "keep")
    assert [keep for _, keep in view] == [10] * 13 + [2] * 2
    # Deleted at the boundary that applied the policy (step 14), with no save to trigger it.
    on_disk = [r.on_disk for r in records[0]]
    assert on_disk[12] == (2, 4, 6, 8, 10, 12)
    assert list(on_disk[13]) == predicted["keep"]
    assert committed_iterations(root) == predicted["keep"]
    assert applied_generation(sandbox, NAME) == 2

    status = sandbox.get("checkpoints", NAME)["status"]
    assert status["appliedPolicy"]["values"]["keepLast"] == 2
    reported = sorted(entry["iteration"] for entry in status.get("savedIterations") or [])
    assert reported == predicted["keep"], "status still lists deleted iterations"
