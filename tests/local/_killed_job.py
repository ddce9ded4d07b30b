"""A 4-rank job whose async local save the test kills: ``python -m tests.local._killed_job``.

Arguments: checkpoint root, local root, ready dir. Runs ``_bodies.save_then_hang`` on 4 gloo
ranks; the ranks never return, the test SIGKILLs this process group.
"""

from __future__ import annotations

import sys

from tests.distributed import run_ranks
from tests.local._bodies import WORLD, save_then_hang


def main() -> None:
    root, local_root, ready = sys.argv[1:4]
    run_ranks(save_then_hang, WORLD, root, local_root, ready, timeout_s=600)


if __name__ == "__main__":
    main()
