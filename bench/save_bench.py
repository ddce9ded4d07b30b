"""Save benchmark: Cairn sync/async against torch.save, DCP and same-run physical baselines.

Method (performance-anchors.md §3): every rep runs the baselines first, then every peer in a
shuffled order, each in fresh processes (2 gloo ranks, 1 thread each). Each peer is normalised
against its own rep's baselines, then medians over reps are reported, as ratios only.

Environment: ``CAIRN_BENCH_GIB`` (total state over both ranks, default 2), ``CAIRN_BENCH_REPS``
(default 5), ``CAIRN_BENCH_DIR`` (scratch dir on the filesystem to measure; default the system
temp dir). Writes ``bench/results/save.json`` (summary), ``save_raw.json`` (every run) and
``save.png``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PEERS = ["torch_save", "dcp_save", "dcp_save_t2", "dcp_async_save", "cairn_sync", "cairn_async"]
GIB = 1 << 30


def _run_method(method: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One method on 2 fresh rank processes; per-rank metrics."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench._ranks", method, json.dumps(cfg)],
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{method} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    ranks: list[dict[str, Any]] = json.loads(line)["ranks"]
    errors = [r["error"] for r in ranks if "error" in r]
    if errors:
        raise RuntimeError(f"{method} failed on a rank:\n{errors[0]}")
    return ranks


def _slowest(ranks: list[dict[str, Any]]) -> dict[str, float]:
    """Per metric, the slowest rank (a save is done when its last rank is); RSS as peak."""
    merged: dict[str, float] = {}
    for key in ranks[0]:
        values = [float(r[key]) for r in ranks if isinstance(r.get(key), (int, float))]
        if values:
            merged[key] = min(values) if key.endswith(("rate", "ratio")) else max(values)
    merged["rss_state_kib"] = max(r["hwm_kib"] - r["rss_before_state_kib"] for r in ranks)
    return merged


def _check_disk(workdir: Path, state_bytes: int) -> None:
    free = shutil.disk_usage(workdir).free
    need = 3 * state_bytes + GIB
    if free < need:
        raise SystemExit(
            f"not enough free disk in {workdir}: {free / GIB:.1f} GiB < {need / GIB:.1f}"
        )


def _one_rep(rep: int, cfg: dict[str, Any]) -> dict[str, dict[str, float]]:
    order = PEERS[:]
    random.Random(rep).shuffle(order)
    runs = {"baselines": _slowest(_run_method("baselines", cfg))}
    for method in order:
        workdir = Path(cfg["workdir"])
        runs[method] = _slowest(_run_method(method, cfg))
        # No settle_disk() needed after this cleanup: the next method's fresh processes import
        # for ~7 s before their first write, longer than DISK_SETTLE_S.
        for entry in workdir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        print(f"rep {rep}: {method:15s} {runs[method]}", flush=True)
    return runs


def _ratios(run: dict[str, dict[str, float]], per_rank_bytes: int) -> dict[str, float]:
    base, sync, asy = run["baselines"], run["cairn_sync"], run["cairn_async"]
    return {
        "blocking_over_memcpy": asy["blocking_s"] / base["memcpy_s"],
        "blocking_first_over_memcpy": asy["blocking_first_s"] / base["memcpy_s"],
        "blocking_over_libc_memcpy": asy["blocking_s"] / base["memcpy_libc_s"],
        "durable_over_fsync": base["write_s"] / asy["e2e_s"],
        "durable_over_fsync_first": base["write_s"] / asy["e2e_first_s"],
        "durable_over_fsync_sync": base["write_s"] / sync["e2e_s"],
        "durable_over_streamed_write": base["write_stream_s"] / asy["e2e_s"],
        "streamed_write_over_fsync": base["write_s"] / base["write_stream_s"],
        # Steady with steady, first with first: each method's first save writes after seconds of
        # disk idle (imports), its later saves follow a deletion and DISK_SETTLE_S, and this
        # disk slows over a run of writes.
        "e2e_over_dcp_save": asy["e2e_s"] / run["dcp_save"]["e2e_s"],
        "e2e_first_over_dcp_save": asy["e2e_first_s"] / run["dcp_save"]["e2e_first_s"],
        "dcp_save_steady_over_first": run["dcp_save"]["e2e_s"] / run["dcp_save"]["e2e_first_s"],
        "e2e_first_over_dcp_save_t2": asy["e2e_first_s"] / run["dcp_save_t2"]["e2e_first_s"],
        "e2e_over_torch_save": asy["e2e_s"] / run["torch_save"]["e2e_s"],
        "compute_during_write": asy["compute_ratio"],
        "compute_during_write_dcp_async": run["dcp_async_save"]["compute_ratio"],
        "dcp_async_blocking_over_memcpy": run["dcp_async_save"]["blocking_s"] / base["memcpy_s"],
        "peak_rss_over_state_async": asy["rss_state_kib"] * 1024 / per_rank_bytes,
        "peak_rss_over_state_sync": sync["rss_state_kib"] * 1024 / per_rank_bytes,
        "peak_rss_over_state_dcp_async": run["dcp_async_save"]["rss_state_kib"]
        * 1024
        / per_rank_bytes,
        "cold_load_over_raw_read": sync["load_cold_s"] / base["read_s"],
        "cold_load_over_best_read": sync["load_cold_s"]
        / min(base["read_s"], base["read_parallel_s"]),
        "parallel_read_over_raw_read": base["read_parallel_s"] / base["read_s"],
        **{f"fsync_over_{p}": base["write_s"] / run[p]["e2e_s"] for p in PEERS},
    }


def _summary(ratios: list[dict[str, float]], reps: int, state_bytes: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.median(r[k] for r in ratios) for k in ratios[0]}
    out["iqr"] = {k: _iqr([r[k] for r in ratios]) for k in ratios[0]}
    out["reps"] = reps
    out["state_bytes"] = state_bytes
    return out


def _iqr(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [f"fsync_over_{p}" for p in PEERS]
    values = [summary[k] for k in keys]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(PEERS, values, color=["#999"] * 4 + ["#2a7", "#27a"])
    ax.axhline(TARGETS["durable_over_fsync"][1], ls="--", color="k", lw=0.8)
    ax.set_ylabel("durable write BW / fsync'ed baseline BW")
    ax.set_title(
        f"median over {summary['reps']} reps, {summary['state_bytes'] / GIB:.2f} GiB on 2 ranks"
    )
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path)


TARGETS = {
    "blocking_over_memcpy": ("<=", 1.0),
    "blocking_first_over_memcpy": ("<=", 2.0),
    "durable_over_fsync": (">=", 0.95),
    "e2e_over_dcp_save": ("<=", 0.9),
    "compute_during_write": (">=", 0.85),
    "peak_rss_over_state_async": ("<=", 2.1),
    "peak_rss_over_state_sync": ("<=", 1.1),
    "cold_load_over_raw_read": ("<=", 0.8),
}


def main() -> dict[str, Any]:
    gib = float(os.environ.get("CAIRN_BENCH_GIB", "2"))
    reps = int(os.environ.get("CAIRN_BENCH_REPS", "5"))
    state_bytes = int(gib * GIB)
    per_rank = state_bytes // 2
    scratch = Path(tempfile.mkdtemp(prefix="cairn-bench-", dir=os.environ.get("CAIRN_BENCH_DIR")))
    _check_disk(scratch, state_bytes)
    print(
        f"save bench: {gib} GiB over 2 ranks, {reps} reps, scratch {scratch}; load {os.getloadavg()}"
    )
    cfg = {"per_rank_bytes": per_rank, "workdir": str(scratch)}
    runs = []
    try:
        for rep in range(reps):
            started = time.time()
            runs.append(_one_rep(rep, cfg))
            print(f"rep {rep} took {time.time() - started:.0f}s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _write(runs, per_rank, state_bytes)


def _write(runs: list[dict[str, Any]], per_rank: int, state_bytes: int) -> dict[str, Any]:
    """Ratios and their summary from the measured runs, written to ``bench/results``."""
    ratios = [_ratios(run, per_rank) for run in runs]
    summary = _summary(ratios, len(runs), state_bytes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "save_raw.json").write_text(json.dumps({"runs": runs, "ratios": ratios}, indent=1))
    (RESULTS / "save.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    _plot(summary, RESULTS / "save.png")
    _report(summary)
    return summary


def rewrite_from_raw() -> dict[str, Any]:
    """Recompute ``save.json`` from the runs in ``save_raw.json`` (after adding a ratio)."""
    raw = json.loads((RESULTS / "save_raw.json").read_text())
    state_bytes = int(json.loads((RESULTS / "save.json").read_text())["state_bytes"])
    return _write(raw["runs"], state_bytes // 2, state_bytes)


def _report(summary: dict[str, Any]) -> None:
    print("\nmedian ratios (target):")
    for key, (op, bound) in TARGETS.items():
        value = summary[key]
        ok = value <= bound if op == "<=" else value >= bound
        print(f"  {key:28s} {value:7.3f}   ({op} {bound})  {'ok' if ok else 'MISSED'}")
    for key in sorted(
        k for k in summary if k not in TARGETS and k not in ("iqr", "reps", "state_bytes")
    ):
        print(f"  {key:28s} {summary[key]:7.3f}")


if __name__ == "__main__":
    rewrite_from_raw() if sys.argv[1:] == ["--from-raw"] else main()
