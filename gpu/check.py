"""Driver of ``make gpu-check``: run every check in its own process, one line of result each.

Usage: ``python -m gpu.check [--only NAME ...]``. Each check runs as ``python -m gpu._rank``
under a time bound; its stderr goes to the log. Writes ``gpu-check.json`` (every check's
verdict, the machine, the versions) and ``gpu-check.log`` into ``$CAIRN_GPU_OUT`` (default
``gpu/out``), prints what was skipped and why, and exits 1 if any check failed.

A check passes when every part that ran held; a part that needs CUDA is skipped, with its
reason, on a machine without it. Benchmark goals are reported, not judged: missing one does
not fail the kit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from gpu._rank import CHECKS, RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = {"engine": 60, "megatron": 75, "rng": 60, "local": 60, "bench": 120}
"""Each check's time bound: 375 s together, so with the install (90 s at most) the kit ends
within 8 minutes even if every check hangs. A GPU run is expected to take 3 to 4 minutes."""


def _run_check(name: str, log: TextIO, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"cairn-gpu-{name}-") as scratch:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "gpu._rank", name, scratch],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, code = _text(exc.stdout), _text(exc.stderr), None
    log.write(f"===== {name} =====\n{stderr}{stdout}\n")
    result = _parse(stdout, code, timeout_s)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _parse(stdout: str, code: int | None, timeout_s: float) -> dict[str, Any]:
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_PREFIX)), None)
    if line is not None:
        result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
        return result
    why = f"timed out after {timeout_s:.0f}s" if code is None else f"exited {code} without a result"
    return {"status": "fail", "parts": {why: False}, "skipped": {}, "figures": {}}


def _line(name: str, result: dict[str, Any]) -> str:
    failed = [part for part, held in result["parts"].items() if not held]
    held = sum(1 for ok in result["parts"].values() if ok)
    text = f"{result['status'].upper():4s}  {name:8s} {held}/{len(result['parts'])} parts held"
    if failed:
        text += "; FAILED: " + "; ".join(failed)
    if result["skipped"]:
        text += f"; {len(result['skipped'])} skipped"
    figures = result["figures"]
    if "blocking_over_d2h" in figures:
        goal = figures.get("goals_met", {}).get("blocking_over_d2h")
        verdict = {True: "goal met", False: "goal MISSED", None: "no goal on CPU"}[goal]
        text += (
            f"; blocking_over_d2h {figures['blocking_over_d2h']:.2f} (<= 1.2: {verdict}),"
            f" save/fsync async {figures['save_over_fsync_async']:.2f}"
            f" sync {figures['save_over_fsync_sync']:.2f}"
        )
    return f"{text} ({result['seconds']:.0f}s)"


def _machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_cuda"] = torch.version.cuda
    for dist_name in ("megatron-core", "nvidia-resiliency-ext", "cairn"):
        info[dist_name] = _version(dist_name)
    return info


def _version(dist_name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist_name)
    except PackageNotFoundError:
        return None


def _out_dir() -> Path:
    out = Path(os.environ.get("CAIRN_GPU_OUT") or ROOT / "gpu" / "out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run these checks only")
    names = parser.parse_args(argv).only or list(CHECKS)
    out = _out_dir()
    machine = _machine()
    mode = "GPU" if machine["cuda"] and os.environ.get("CAIRN_GPU_MODE") != "cpu" else "CPU"
    print(f"cairn gpu-check, {mode} mode: {json.dumps(machine)}", flush=True)
    results: dict[str, Any] = {}
    with open(out / "gpu-check.log", "w") as log:
        for name in names:
            # Without CUDA the bound only catches a hang; a busy 2-core CI machine is slow.
            bound = TIMEOUT_S[name] * (1 if mode == "GPU" else 2)
            results[name] = _run_check(name, log, bound)
            print(_line(name, results[name]), flush=True)
            for line in results[name].get("lines", []):
                print(f"      {line}", flush=True)
    report = {"mode": mode.lower(), "machine": machine, "checks": results}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    _print_skips(results)
    failed = [name for name, result in results.items() if result["status"] == "fail"]
    print(f"results: {out / 'gpu-check.json'}; log: {out / 'gpu-check.log'}")
    print(f"gpu-check: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


def _print_skips(results: dict[str, Any]) -> None:
    skips = [(n, part, why) for n, r in results.items() for part, why in r["skipped"].items()]
    if skips:
        print("skipped:")
    for name, part, why in skips:
        print(f"  {name}: {part} -- {why}")


if __name__ == "__main__":
    raise SystemExit(main())
