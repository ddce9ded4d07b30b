"""``make bench``: every benchmark of the repository, one after the other."""

from __future__ import annotations

import importlib.util


def main() -> None:
    from bench import (
        control_overhead,
        interval_sim,
        local,
        preemption,
        read_parallelism,
        save_bench,
        scaling,
        writer_knobs,
    )

    save_bench.main()
    read_parallelism.main()
    local.main()
    scaling.main()
    writer_knobs.main()
    interval_sim.main()
    preemption.main()
    control_overhead.main()
    if importlib.util.find_spec("bench.operator_scale") is None:
        print("bench.operator_scale not present; operator scale benchmark skipped")
        return
    from bench import operator_scale

    operator_scale.main()


if __name__ == "__main__":
    main()
