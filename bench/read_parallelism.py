"""What a cold read of this disk gives with 1, 2, 4 and 8 reader threads and 8 or 64 MiB requests.

The floor of a cold load is one read of its bytes: if more readers or larger requests do not
raise the throughput of a single sequential ``readinto``, no loader can beat that read. Writes one
1 GiB file of random bytes to ``CAIRN_BENCH_DIR`` (default the system temp dir), drops it from
the page cache before every read (fsync, then ``POSIX_FADV_DONTNEED``) and reads it whole; every
configuration is read ``REPS`` times, interleaved with the others, and the median is reported.
Writes ``bench/results/read_parallelism.json``. Run: ``python -m bench.read_parallelism``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._probes import evict

RESULTS = Path(__file__).resolve().parent / "results" / "read_parallelism.json"
SIZE = 1 << 30
THREADS = (1, 2, 4, 8)
REQUESTS = (8 << 20, 64 << 20)
REPS = 3


def _write(path: Path) -> None:
    chunk = os.urandom(64 << 20)
    with open(path, "wb") as handle:
        handle.writelines(chunk for _ in range(SIZE // len(chunk)))
        handle.flush()
        os.fsync(handle.fileno())


def _read_range(fd: int, view: memoryview, start: int, end: int, request: int) -> None:
    offset = start
    while offset < end:
        got = os.preadv(fd, [view[offset : min(end, offset + request)]], offset)
        if got <= 0:
            break
        offset += got


def _parallel(path: Path, view: memoryview, threads: int, request: int) -> float:
    evict([path])
    fd = os.open(path, os.O_RDONLY)
    try:
        part = SIZE // threads
        workers = [
            threading.Thread(target=_read_range, args=(fd, view, i * part, (i + 1) * part, request))
            for i in range(threads)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return SIZE / (time.perf_counter() - start) / (1 << 30)
    finally:
        os.close(fd)


def _sequential(path: Path, view: memoryview) -> float:
    evict([path])
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        rest = view
        while rest:
            got = handle.readinto(rest)
            if not got:
                break
            rest = rest[got:]
    return SIZE / (time.perf_counter() - start) / (1 << 30)


def main() -> dict[str, Any]:
    """Measure once; write and return GiB/s per (threads, request size)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("CAIRN_BENCH_DIR")) as tmp:
        path = Path(tmp) / "read.bin"
        _write(path)
        view = memoryview(bytearray(SIZE))
        runs: dict[str, list[float]] = {}
        for _ in range(REPS):
            runs.setdefault("sequential_readinto_gib_s", []).append(_sequential(path, view))
            for threads in THREADS:
                for request in REQUESTS:
                    key = f"threads_{threads}_request_{request >> 20}mib_gib_s"
                    runs.setdefault(key, []).append(_parallel(path, view, threads, request))
    result: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    best = max(v for k, v in result.items() if k.startswith("threads_"))
    result["best_parallel_over_sequential"] = round(best / result["sequential_readinto_gib_s"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
