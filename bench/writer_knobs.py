"""What each knob of the async writer buys: threads per rank, CPU nice, I/O priority, affinity.

Every configuration runs Cairn's async save (worker ready before the first save) on 2 fresh
gloo ranks; one knob changes at a time from the defaults. Each rep runs the disk baselines
first and the configurations in a shuffled order; medians over reps. Reported per
configuration: end-to-end durable save over the fsync'ed write of the same bytes, training
compute rate while the writer writes (over the idle rate), blocking part over memcpy.

Environment: ``CAIRN_KNOBS_GIB`` (default 1), ``CAIRN_KNOBS_REPS`` (default 1; ``make bench`` keeps
its whole run under 30 minutes),
``CAIRN_BENCH_DIR``. Writes ``bench/results/writer_knobs.json``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.save_bench import GIB, RESULTS, _check_disk, _run_method, _slowest

DEFAULT = {"threads": 1, "nice": 10, "io_priority": "low", "cpu_affinity": "auto"}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "threads_2": {"threads": 2},
    "threads_4": {"threads": 4},
    "nice_0": {"nice": 0},
    "nice_19": {"nice": 19},
    "io_normal": {"io_priority": "normal"},
    "io_idle": {"io_priority": "idle"},
    "affinity_inherit": {"cpu_affinity": "inherit"},
}


RANKS = 2


def _configs() -> dict[str, dict[str, Any]]:
    """The knobs worth a run here: with no core beyond the ranks' one thread each, 'auto'
    leaves the writer unpinned, and an 'inherit' run would repeat the default one."""
    if len(os.sched_getaffinity(0)) > RANKS:
        return dict(CONFIGS)
    return {k: v for k, v in CONFIGS.items() if k != "affinity_inherit"}


def _one_rep(rep: int, cfg: dict[str, Any], workdir: Path) -> dict[str, dict[str, float]]:
    base = _slowest(_run_method("baselines", cfg))
    names = list(_configs())
    random.Random(rep).shuffle(names)
    out = {}
    for name in names:
        options = {**DEFAULT, **CONFIGS[name], "saves": 3}
        run = _slowest(_run_method("cairn_async", {**cfg, "options": options}))
        for entry in workdir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        out[name] = {
            "e2e_over_fsync": run["e2e_s"] / base["write_s"],
            "compute_during_write": run["compute_ratio"],
            "blocking_over_memcpy": run["blocking_s"] / base["memcpy_s"],
            "e2e_s": run["e2e_s"],
        }
        print(f"knobs rep {rep}: {name:17s} {out[name]}", flush=True)
    return out


def main() -> dict[str, Any]:
    gib = float(os.environ.get("CAIRN_KNOBS_GIB", "1"))
    reps = int(os.environ.get("CAIRN_KNOBS_REPS", "1"))
    scratch = Path(tempfile.mkdtemp(prefix="cairn-knobs-", dir=os.environ.get("CAIRN_BENCH_DIR")))
    _check_disk(scratch, int(gib * GIB))
    print(f"writer knobs: {gib} GiB over 2 ranks, {reps} reps, {os.cpu_count()} cores")
    cfg = {"per_rank_bytes": int(gib * GIB) // 2, "workdir": str(scratch)}
    try:
        runs = [_one_rep(rep, cfg, scratch) for rep in range(reps)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary: dict[str, Any] = {
        name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
        for name in _configs()
    }
    summary["_meta"] = {
        "gib": gib,
        "reps": reps,
        "cores": os.cpu_count(),
        "defaults": DEFAULT,
        "changes": _configs(),
        "note": "affinity 'auto' pins the writer only to cores beyond training's threads; "
        "with no spare core it equals 'inherit'",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "writer_knobs.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
