"""Preemption soak: preemptions at random moments, each followed by a restart that resumes.

One chain of runs of a 2-rank gloo training job (``bench._preemption_job``: a small MLP, about
12 MiB of model and optimizer state per rank, saves every ``SAVE_INTERVAL`` steps, governed by a
Checkpoint in an API sandbox with the operator running). Each run trains for a random time
(seeded), is preempted by one of these signals, and the next run resumes from the same root:

- ``sigterm_every_rank``: SIGTERM to both ranks (what the kubelet sends a pod's containers);
- ``sigterm_one_rank``: SIGTERM to one rank only (the others learn it at the next boundary);
- ``sigterm_async_in_flight``: the run saves asynchronously every ``ASYNC_SAVE_INTERVAL`` steps;
  SIGTERM to both ranks as soon as a save is staged (from the run's second save on: the first
  also starts the async worker process);
- ``pod_deleted``: the job's pod is deleted (the operator announces it) and SIGTERM follows at
  once, as the kubelet sends it;
- ``node_cordoned``, ``workload_evicted``: the pod's node is cordoned / the job's Kueue Workload
  gets Evicted=True; the operator publishes ``spec.saveNow``; after a random notice the pod is
  deleted and SIGTERM follows (the eviction after a cordon, Kueue stopping the job).

Restarts are fresh processes forked from a server that imported torch and Cairn once (their
import time is not what is measured). Per preemption: the step the ranks stopped at, whether a
committed checkpoint of that step exists afterwards, the iteration the next run resumed from,
the time from SIGTERM until the tracker named the step reached (the final save made durable)
and until the ranks exited (after stopping the async worker and flushing status).

Writes ``bench/results/preemption.json``: ``durable_save_fraction`` (goal 1.0),
``median_steps_lost`` (step reached minus iteration resumed; goal <= 1),
``p95_final_save_over_grace`` (SIGTERM to durable, over ``terminationGracePeriodSeconds``; a
preemption without a durable save counts as 1), ``p95_exit_over_grace``,
``announced_saved_before_sigterm`` (announced by a cordon or an eviction, the job's committed
answer was in status before the SIGTERM), ``in_flight_save_committed``, per-kind figures and
every record. Environment: ``CAIRN_BENCH_PREEMPTIONS`` (default 20), ``CAIRN_BENCH_KINDS``
(comma-separated subset of the kinds above), ``CAIRN_BENCH_DIR`` (scratch),
``CAIRN_BENCH_DEBUG=1`` (Cairn's log at INFO). Run: ``python -m bench.preemption`` (about 1.5
minutes on 2 loaded cores; new preemptions stop after ``BUDGET_S``).
"""

from __future__ import annotations

import json
import os
import queue
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from bench._preemption_cluster import KINDS, Cluster, Kind
from bench._preemption_job import RunConfig

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "preemption.json"
SEED = 20261130
WORLD = 2
GRACE_S = 30
SAVE_INTERVAL = 10
ASYNC_SAVE_INTERVAL = 4
PACE_S = 0.03
TRAIN_FOR_S = (0.3, 2.5)
"""A preemption comes after a uniformly random time of training in this range."""
WAIT_S = 60.0
BUDGET_S = 210.0
"""No new preemption starts after this long: the bench stays bounded on a loaded machine."""
GOALS = {
    "durable_save_fraction": (">=", 1.0),
    "median_steps_lost": ("<=", 1.0),
    "p95_final_save_over_grace": ("<=", 1.0),
}


class Run:
    """The two ranks of one run and the reports they send; killed if still running at exit."""

    def __init__(self, mp_ctx: Any, cfg: RunConfig) -> None:
        from bench._preemption_job import rank_main

        self.reports = mp_ctx.Queue()
        self.procs = [
            mp_ctx.Process(target=rank_main, args=(rank, WORLD, cfg, self.reports))
            for rank in range(WORLD)
        ]
        for proc in self.procs:
            proc.start()

    def wait(self, event: str) -> list[dict[str, Any]]:
        """Every rank's report of ``event`` ("resumed", or how the run ended)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < WORLD:
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"ranks did not report {event!r} within {WAIT_S:.0f}s: {got}")
            try:
                report = self.reports.get(timeout=1.0)
            except queue.Empty:
                if any(p.exitcode not in (None, 0, 143) for p in self.procs):
                    raise RuntimeError(f"a rank died: {[p.exitcode for p in self.procs]}") from None
                continue
            if event == "resumed" or report["event"] != "resumed":
                got.append(report)
        return sorted(got, key=lambda r: int(r["rank"]))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs if p.pid is not None]

    def join(self) -> list[int | None]:
        for proc in self.procs:
            proc.join(WAIT_S)
        return [p.exitcode for p in self.procs]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


def _plan(rng: random.Random, count: int, only: tuple[Kind, ...] = KINDS) -> list[Kind]:
    """``count`` kinds, each about as often as the others, in a seeded random order."""
    kinds = [only[i % len(only)] for i in range(count)]
    rng.shuffle(kinds)
    return kinds


def _kinds_from_env() -> tuple[Kind, ...]:
    raw = os.environ.get("CAIRN_BENCH_KINDS", "").strip()
    if not raw:
        return KINDS
    chosen = [k for k in KINDS if k in raw.split(",")]
    unknown = set(raw.split(",")) - set(KINDS)
    if unknown or not chosen:
        raise ValueError(f"CAIRN_BENCH_KINDS={raw!r}: use a comma-separated subset of {KINDS}")
    return tuple(chosen)


def _config(
    root: Path, scratch: Path, index: int, kind: Kind | None, env: dict[str, str]
) -> RunConfig:
    is_async = kind == "sigterm_async_in_flight"
    return RunConfig(
        root=str(root),
        store=str(scratch / f"store-{index}"),
        env={**env, "CAIRN_GENERATION": str(index)},
        save_interval=ASYNC_SAVE_INTERVAL if is_async else SAVE_INTERVAL,
        async_save=is_async,
        pace_s=PACE_S,
        max_steps=3 if kind is None else 1_000_000,
    )


def _preempt(
    cluster: Cluster, run: Run, index: int, kind: Kind, root: Path, rng: random.Random
) -> dict[str, Any]:
    """Start-to-exit of one preemption of ``run``; the record (without the resume)."""
    from cairn_agent.storage.listing import committed_iterations

    time.sleep(rng.uniform(*TRAIN_FOR_S))  # the random moment
    signalled = cluster.inject(kind, index, run.pids(), root, rng)
    stopped = run.wait("stopped")
    codes = run.join()
    steps = {int(r["step"]) for r in stopped if r["event"] == "stopped"}
    reached = max(steps) if steps else None
    committed = committed_iterations(root)
    exit_at = max(float(r.get("exit_at") or 0.0) for r in stopped)
    in_flight = signalled.pop("in_flight_iteration", None)
    in_flight_committed = signalled.pop("in_flight_committed", False)
    record: dict[str, Any] = {
        "kind": kind,
        "reached": reached,
        "same_step_on_every_rank": len(steps) == 1,
        "exit_codes": codes,
        "messages": sorted({str(r.get("message")) for r in stopped}),
        "durable": reached is not None and reached in committed,
        "final_save_s": _durable_after(root, reached, signalled.pop("sigterm_wall")),
        "exit_s": round(exit_at - signalled.pop("sigterm_at"), 3),
        **signalled,
    }
    if kind == "sigterm_async_in_flight":
        record["in_flight_iteration"] = in_flight
        record["in_flight_committed"] = in_flight_committed
    return record


def _durable_after(root: Path, reached: int | None, sigterm_wall: float) -> float | None:
    """Seconds from the SIGTERM until the tracker named the step reached (0 when it already
    did); None when it does not."""
    from cairn_agent.storage import layout

    tracker = layout.tracker_path(root)
    if reached is None or not tracker.exists() or tracker.read_text().strip() != str(reached):
        return None
    return round(max(0.0, tracker.stat().st_mtime - sigterm_wall), 3)


def soak(count: int) -> tuple[list[dict[str, Any]], float]:
    """Run the chain of ``count`` preemptions; the records and the wall time."""
    import multiprocessing as mp

    rng = random.Random(SEED)
    plan = _plan(rng, count, _kinds_from_env())
    mp_ctx = mp.get_context("forkserver")
    # Restarts fork from a server that has imported these once (see the module docstring).
    mp_ctx.set_forkserver_preload(["torch", "torch.distributed", "cairn_agent.checkpointing"])
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(
            prefix="cairn-preempt-", dir=os.environ.get("CAIRN_BENCH_DIR")
        ) as tmp,
        Cluster(GRACE_S) as cluster,
    ):
        root, scratch = Path(tmp) / "root", Path(tmp)
        cluster.create_checkpoint(root)
        env = cluster.job_env()
        for index, kind in enumerate(plan):
            if time.monotonic() - started > BUDGET_S:
                print(f"budget of {BUDGET_S:.0f}s spent: stopping after {index} preemptions")
                break
            cluster.place(index, kind)
            with Run(mp_ctx, _config(root, scratch, index, kind, env)) as run:
                _record_resume(records, run.wait("resumed"))
                records.append(_preempt(cluster, run, index, kind, root, rng))
            cluster.clean_up(index, kind)
            print(f"preemption {index + 1:2d}/{count} {kind:24s} {_brief(records[-1])}", flush=True)
        with Run(mp_ctx, _config(root, scratch, len(records), None, env)) as last:
            _record_resume(records, last.wait("resumed"))
            last.wait("finished")
            last.join()
    return records, time.monotonic() - started


def _record_resume(records: list[dict[str, Any]], resumed: list[dict[str, Any]]) -> None:
    if not records:
        return
    iteration = int(resumed[0]["iteration"])
    records[-1]["resumed"] = iteration
    reached = records[-1]["reached"]
    records[-1]["steps_lost"] = None if reached is None else reached - iteration


def _brief(record: dict[str, Any]) -> str:
    return (
        f"reached {record['reached']}, durable {record['durable']}, SIGTERM->committed "
        f"{record['final_save_s']}s, ->exit {record['exit_s']}s"
    )


def _p95(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else None


def _over_grace(value: float | None) -> float | None:
    return None if value is None else round(value / GRACE_S, 4)


def summarize(records: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The figures of ``bench/results/preemption.json``."""
    lost = [float(r["steps_lost"]) for r in records if r.get("steps_lost") is not None]
    # A preemption without a durable save of its step counts as a whole grace period.
    saves = [GRACE_S if r["final_save_s"] is None else float(r["final_save_s"]) for r in records]
    exits = [float(r["exit_s"]) for r in records]
    announced = [r for r in records if "saved_before_sigterm" in r]
    in_flight = [r for r in records if "in_flight_committed" in r]
    return {
        "preemptions": len(records),
        "durable_save_fraction": sum(bool(r["durable"]) for r in records) / len(records),
        "median_steps_lost": statistics.median(lost) if lost else None,
        "max_steps_lost": max(lost) if lost else None,
        "p95_final_save_over_grace": _over_grace(_p95(saves)),
        "p95_final_save_s": _p95(saves),
        "p95_exit_over_grace": _over_grace(_p95(exits)),
        "p95_exit_s": _p95(exits),
        "grace_s": GRACE_S,
        "exit_143_fraction": sum(r["exit_codes"] == [143] * WORLD for r in records) / len(records),
        "announced_saved_before_sigterm": _fraction(announced, "saved_before_sigterm"),
        "in_flight_save_committed": _fraction(in_flight, "in_flight_committed"),
        "by_kind": {
            kind: _kind_summary([r for r in records if r["kind"] == kind])
            for kind in KINDS
            if any(r["kind"] == kind for r in records)
        },
        "seed": SEED,
        "wall_s": round(wall_s, 1),
        "load_avg": list(os.getloadavg()),
        "records": records,
    }


def _fraction(records: list[dict[str, Any]], key: str) -> str | None:
    """``"k/n"`` of ``records`` whose ``key`` is true; None without records."""
    return f"{sum(bool(r[key]) for r in records)}/{len(records)}" if records else None


def _kind_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "count": len(records),
        "durable": sum(bool(r["durable"]) for r in records),
        "steps_lost": [r.get("steps_lost") for r in records],
        "final_save_s": [r["final_save_s"] for r in records],
        "exit_s": [r["exit_s"] for r in records],
    }


def _report(summary: dict[str, Any]) -> None:
    print(f"\n{summary['preemptions']} preemptions in {summary['wall_s']:.0f}s (goal):")
    for key, (op, bound) in GOALS.items():
        value = summary[key]
        ok = value is not None and (value <= bound if op == "<=" else value >= bound)
        print(f"  {key:28s} {value!s:>8.8}   ({op} {bound})  {'ok' if ok else 'MISSED'}")
    for key in (
        "p95_exit_over_grace",
        "announced_saved_before_sigterm",
        "in_flight_save_committed",
    ):
        print(f"  {key:28s} {summary[key]!s:>8.8}")
    for kind, figures in summary["by_kind"].items():
        print(
            f"  {kind:24s} durable {figures['durable']}/{figures['count']}, steps lost "
            f"{figures['steps_lost']}, SIGTERM->committed {figures['final_save_s']} s"
        )


def main() -> dict[str, Any]:
    count = int(os.environ.get("CAIRN_BENCH_PREEMPTIONS", "20"))
    if count < 1:
        raise ValueError(f"CAIRN_BENCH_PREEMPTIONS={count} must be >= 1")
    print(f"preemption soak: {count} preemptions, seed {SEED}; load {os.getloadavg()}")
    records, wall_s = soak(count)
    summary = summarize(records, wall_s)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=1, sort_keys=True))
    _report(summary)
    return summary


if __name__ == "__main__":
    main()
