"""Scaling curves: save and cold-load time against state size and rank count.

Each point runs in fresh rank processes (``_methods.scaling_point``): the disk's fsync'ed
sequential write and cold raw read of the same bytes, Cairn's sync save and cold load, and
async saves through a worker that is ready before the first save (blocking part and end to
end). A point reports the slowest rank, so seconds are "until every rank is done".

Curves: 0.25, 0.5, 1, 2, 4 GiB over 2 ranks; 1, 2, 4 ranks at 1 GiB. The figure to defend is
save seconds over fsync'ed-write seconds at 4 GiB (flat with size means no hidden cost that
grows with the state). Environment: ``CAIRN_SCALING_REPS`` (default 1; medians over reps),
``CAIRN_SCALING_GIB`` (comma-separated sizes, default the curve above), ``CAIRN_BENCH_DIR``.
Writes ``bench/results/scaling.json`` and ``scaling.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.save_bench import GIB, RESULTS, _check_disk, _run_method, _slowest

SIZES_GIB = [0.25, 0.5, 1.0, 2.0, 4.0]
RANKS = [1, 2, 4]
RANKS_AT_GIB = 1.0
SERIES = {
    "sync_save_s": "cairn sync save",
    "async_blocking_s": "cairn async: blocking",
    "async_e2e_s": "cairn async: end to end",
    "load_cold_s": "cairn cold load",
    "write_s": "fsync'ed write (disk)",
    "read_s": "raw cold read (disk)",
}


def _point(gib: float, world: int, reps: int, scratch: Path) -> dict[str, Any]:
    cfg = {"per_rank_bytes": int(gib * GIB) // world, "workdir": str(scratch), "world": world}
    runs = []
    for _ in range(reps):
        merged = _slowest(_run_method("scaling_point", cfg))
        runs.append(
            {
                "sync_save_s": merged["e2e_s"],
                "async_blocking_s": merged["async_blocking_s"],
                "async_blocking_first_s": merged["async_blocking_first_s"],
                "async_e2e_s": merged["async_e2e_s"],
                "load_cold_s": merged["load_cold_s"],
                "write_s": merged["write_s"],
                "write_stream_s": merged["write_stream_s"],
                "read_s": merged["read_s"],
                "memcpy_s": merged["memcpy_s"],
            }
        )
        for entry in scratch.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    point: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    point.update(gib=gib, ranks=world, reps=reps)
    point["sync_over_fsync"] = point["sync_save_s"] / point["write_s"]
    point["async_e2e_over_fsync"] = point["async_e2e_s"] / point["write_s"]
    point["async_blocking_over_memcpy"] = point["async_blocking_s"] / point["memcpy_s"]
    point["load_over_raw_read"] = point["load_cold_s"] / point["read_s"]
    print(f"scaling {gib:5.2f} GiB x {world} ranks: {_brief(point)}", flush=True)
    return point


def _brief(point: dict[str, Any]) -> str:
    keys = ("sync_over_fsync", "async_e2e_over_fsync", "load_over_raw_read", "write_s")
    return ", ".join(f"{k} {point[k]:.3f}" for k in keys)


def _plot(by_size: list[dict[str, Any]], by_ranks: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in SERIES.items():
        style = "--" if "disk" in label else "-"
        left.plot(
            [p["gib"] for p in by_size], [p[key] for p in by_size], style, marker="o", label=label
        )
        right.plot(
            [p["ranks"] for p in by_ranks],
            [p[key] for p in by_ranks],
            style,
            marker="o",
            label=label,
        )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="state size over 2 ranks (GiB)",
        ylabel="seconds (slowest rank)",
        title="against state size",
    )
    right.set(
        xlabel="ranks",
        ylabel="seconds (slowest rank)",
        title=f"against rank count at {RANKS_AT_GIB:g} GiB",
    )
    right.set_xticks(RANKS)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> dict[str, Any]:
    reps = int(os.environ.get("CAIRN_SCALING_REPS", "1"))
    sizes = [float(x) for x in os.environ.get("CAIRN_SCALING_GIB", "").split(",") if x]
    sizes = sizes or SIZES_GIB
    scratch = Path(tempfile.mkdtemp(prefix="cairn-scaling-", dir=os.environ.get("CAIRN_BENCH_DIR")))
    _check_disk(scratch, int(max(sizes) * GIB))
    print(f"scaling bench: sizes {sizes} GiB, ranks {RANKS}, {reps} reps; load {os.getloadavg()}")
    started = time.time()
    try:
        by_size = [_point(gib, 2, reps, scratch) for gib in sizes]
        at_gib = {p["gib"]: p for p in by_size}
        by_ranks = [
            at_gib[RANKS_AT_GIB]
            if n == 2 and RANKS_AT_GIB in at_gib
            else _point(RANKS_AT_GIB, n, reps, scratch)
            for n in RANKS
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    largest = by_size[-1]
    summary = {
        "by_size": by_size,
        "by_ranks": by_ranks,
        "largest_gib": largest["gib"],
        "sync_over_fsync_at_largest": largest["sync_over_fsync"],
        "async_e2e_over_fsync_at_largest": largest["async_e2e_over_fsync"],
        "load_over_raw_read_at_largest": largest["load_over_raw_read"],
        "reps": reps,
        "seconds": round(time.time() - started),
        "loadavg_at_end": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    _plot(by_size, by_ranks, RESULTS / "scaling.png")
    print(
        f"at {largest['gib']:g} GiB: sync save / fsync'ed write {largest['sync_over_fsync']:.3f}, "
        f"async end-to-end / fsync'ed write {largest['async_e2e_over_fsync']:.3f} (goal <= 1.05)"
    )
    return summary


if __name__ == "__main__":
    main()
