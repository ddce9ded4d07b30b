"""``make bench``: every benchmark of the repository, one after the other, each timed.

The whole run is meant to stay under 30 minutes on the 2-core development machine; the time of
each benchmark and the total are printed and written to ``bench/results/bench_times.json``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from pathlib import Path

BENCHMARKS = [
    "save_bench",
    "read_parallelism",
    "local",
    "scaling",
    "writer_knobs",
    "interval_sim",
    "preemption",
    "control_overhead",
    "operator_scale",
]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    seconds: dict[str, float] = {}
    for name in BENCHMARKS:
        if importlib.util.find_spec(f"bench.{name}") is None:
            print(f"bench.{name} not present; skipped")
            continue
        start = time.monotonic()
        importlib.import_module(f"bench.{name}").main()
        seconds[name] = round(time.monotonic() - start, 1)
        print(f"== bench.{name}: {seconds[name]:.0f} s", flush=True)
    total = round(sum(seconds.values()), 1)
    print(f"== make bench: {total / 60:.1f} min in all")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_times.json").write_text(
        json.dumps({"seconds": seconds, "total_minutes": round(total / 60, 1)}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
