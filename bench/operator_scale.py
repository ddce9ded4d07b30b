"""Operator scale benchmark: 500 and 2,000 Checkpoints x 5 agent status updates, emulator and
operator in separate processes.

Reports end-to-end reconciles per second (agent changes processed until every Checkpoint shows
the last one), the emulator's own request ceiling measured in the same run (so the operator's
figure can be read as a fraction of what the API server side allows), the operator process's CPU
milliseconds per agent change, every reconcile cycle it causes included (from
/proc/<pid>/stat), and its resident memory per Checkpoint: peak RSS (VmHWM) less its RSS with
its watches started and no Checkpoint yet, over the count. A kopf operator with a no-op handler
fed the same traffic in the same run gives kopf's own floor of both. Goals (issue 13): <= 3 ms
CPU per change and <= 50 KiB per Checkpoint at 2,000. Writes ``operator_scale_500.json`` and
``operator_scale.json`` (2,000). Run: ``python -m bench.operator_scale``;
``CAIRN_BENCH_CHECKPOINTS=N`` runs one size only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SIZES = (500, 2000)
N_CHECKPOINTS = SIZES[0]
N_UPDATES = 5
CLIENT_THREADS = 8
CEILING_SECONDS = 4.0
REST_WAIT_S = 10.0
CONVERGE_TIMEOUT_S = 900.0
API = "/apis/cairn.dev/v1alpha1/namespaces/{ns}/checkpoints"
BASELINE_NS = "baseline"
# A kopf operator that does nothing on each Checkpoint event: kopf's own per-event CPU floor.
BASELINE_OPERATOR = """
import asyncio, kopf
registry = kopf.OperatorRegistry()
@kopf.on.login(registry=registry)
def login(**_): return kopf.ConnectionInfo(server={url!r}, insecure=True)
@kopf.on.event("cairn.dev", "v1alpha1", "checkpoints", registry=registry)
async def noop(**_): pass
kopf.configure(quiet=True)
asyncio.run(kopf.operator(registry=registry, standalone=True, namespaces=[{ns!r}]))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(
    url: str, method: str = "GET", body: Any = None, content_type: str = "application/json"
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def _spawn(code: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _manifest(i: int, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Checkpoint",
        "metadata": {"name": f"job-{i:04d}", "namespace": ns},
        "spec": {
            "storage": {
                "persistent": {"claimName": "pvc", "mountPath": "/c", "path": f"/c/job-{i:04d}"}
            },
            "save": {"interval": 100},
            "retention": {"keepLast": 3},
        },
    }


def _agent_update(i: int, round_: int) -> dict[str, Any]:
    its = [100 * (k + 1) for k in range(round_ + 1)]
    saved = [
        {
            "iteration": it,
            "committedAt": "2026-01-01T00:00:00Z",
            "bytes": 1 << 20,
            "files": 8,
            "manifestDigest": f"sha256:{i}-{it}",
            "verified": True,
        }
        for it in its
    ]
    return {
        "status": {
            "savedIterations": saved,
            "latestCommittedIteration": its[-1],
            "lastSaveTime": "2026-01-01T00:00:00Z",
            "asyncWorker": {"state": "Stopped", "heartbeatTime": "2026-01-01T00:00:00Z", "pid": 1},
        }
    }


def _converged(url: str, final_iteration: int) -> int:
    items = _request(url + API.format(ns="default"))["items"]
    return sum(
        1
        for o in items
        if ((o.get("status") or {}).get("resumeFrom") or {}).get("iteration") == final_iteration
        and (o.get("status") or {}).get("phase") == "Ready"
    )


def _metric(metrics_url: str, name: str, labels: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    series = f"{name}{{{labels}}}" if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(series):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _ceiling(url: str, seconds: float, concurrency: int = 32) -> float:
    """Status PATCHes per second the emulator sustains (the operator's dominant request)."""
    target = f"{url}{API.format(ns='default')}/job-0000/status"
    headers = {"Content-Type": "application/merge-patch+json"}
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            body = {
                "status": {
                    "asyncWorker": {
                        "state": "Stopped",
                        "heartbeatTime": "2026-01-01T00:00:00Z",
                        "pid": done,
                    }
                }
            }
            async with session.patch(target, json=body, headers=headers) as resp:
                await resp.read()
                done += resp.status == 200

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return done / (time.monotonic() - start)


def _drive_agents(url: str, ns: str = "default") -> None:
    base = url + API.format(ns=ns)
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda i: _request(base, "POST", _manifest(i, ns)), range(N_CHECKPOINTS)))
        for round_ in range(N_UPDATES):
            list(
                pool.map(
                    lambda i, r=round_: _request(
                        f"{base}/job-{i:04d}/status",
                        "PATCH",
                        _agent_update(i, r),
                        "application/merge-patch+json",
                    ),
                    range(N_CHECKPOINTS),
                )
            )


def _baseline(url: str) -> dict[str, Any]:
    """kopf's floor: CPU per event of a no-op kopf operator fed the same agent traffic."""
    _request(
        url + "/api/v1/namespaces",
        "POST",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BASELINE_NS}},
    )
    operator = _spawn(BASELINE_OPERATOR.format(url=url, ns=BASELINE_NS))
    try:
        time.sleep(3.0)  # discovery and watch start
        cpu0, idle = _proc_cpu_s(operator.pid), _rss_mib(operator.pid, "VmRSS")
        _drive_agents(url, BASELINE_NS)
        time.sleep(5.0)  # the last events reach the operator
        cpu = _proc_cpu_s(operator.pid) - cpu0
        rss = _rss_mib(operator.pid)
    finally:
        operator.terminate()
        operator.wait(30)
    events = N_CHECKPOINTS * (1 + N_UPDATES)
    return {
        "kopf_noop_cpu_ms_per_event": round(1000 * cpu / events, 3),
        "kopf_noop_peak_rss_mib": round(rss, 1),
        "kopf_noop_rss_kib_per_checkpoint": round(1024 * (rss - idle) / N_CHECKPOINTS, 1),
    }


def _run(url: str, tmp: Path) -> dict[str, Any]:
    metrics_port = _free_port()
    operator = _spawn(
        "from cairn_operator.run import run\nfrom cairn_operator.settings import OperatorSettings\n"
        f"run(namespace='default', metrics_port={metrics_port}, server={url!r}, quiet=True, "
        "settings=OperatorSettings(health_interval_s=30.0))"
    )
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        _wait_http(metrics_url)
        time.sleep(2.0)  # let kopf finish discovery and start its watches
        idle = _rss_mib(operator.pid, "VmRSS")
        cpu0, t0 = _proc_cpu_s(operator.pid), time.monotonic()
        _drive_agents(url)
        driven = time.monotonic() - t0
        final = 100 * N_UPDATES
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while _converged(url, final) < N_CHECKPOINTS:
            if time.monotonic() > deadline or operator.poll() is not None:
                raise RuntimeError("the operator did not converge")
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        cpu = _proc_cpu_s(operator.pid) - cpu0
        cycles = _metric(
            metrics_url, "cairn_operator_reconcile_duration_seconds_count", 'handler="checkpoint"'
        )
        skipped = _metric(metrics_url, "cairn_operator_checkpoint_events_skipped_total", "")
        rss = _rss_mib(operator.pid)
        # At rest: kopf's per-object workers have idled out (idle_timeout 5 s), nothing queued.
        time.sleep(REST_WAIT_S)
        rest = _rss_mib(operator.pid, "VmRSS")
    finally:
        operator.terminate()
        operator.wait(30)
    changes = N_CHECKPOINTS * (1 + N_UPDATES)
    return {
        "checkpoints": N_CHECKPOINTS,
        "agent_updates_each": N_UPDATES,
        "changes": changes,
        "reconcile_cycles": int(cycles),
        "reconcile_cycles_per_change": round(cycles / changes, 2),
        "events_skipped": int(skipped),
        "seconds_to_converge": round(elapsed, 2),
        "seconds_driving_agents": round(driven, 2),
        "reconciles_per_second": round(changes / elapsed, 1),
        "reconcile_cycles_per_second": round(cycles / elapsed, 1),
        "operator_cpu_seconds": round(cpu, 2),
        "operator_cpu_ms_per_reconcile": round(1000 * cpu / max(cycles, 1), 3),
        "operator_cpu_ms_per_change": round(1000 * cpu / changes, 3),
        "idle_rss_mib": round(idle, 1),
        "peak_rss_mib": round(rss, 1),
        "rss_kib_per_checkpoint": round(1024 * (rss - idle) / N_CHECKPOINTS, 1),
        "rest_rss_mib": round(rest, 1),
        "rest_rss_kib_per_checkpoint": round(1024 * (rest - idle) / N_CHECKPOINTS, 1),
    }


def measure(n_checkpoints: int) -> dict[str, Any]:
    """Run the benchmark once at ``n_checkpoints``; write and return its results."""
    global N_CHECKPOINTS
    N_CHECKPOINTS = n_checkpoints
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        port = _free_port()
        kubeconfig = Path(tmp) / "kubeconfig"
        emulator = _spawn(
            "from cairn_operator.testing import serve_forever\n"
            f"serve_forever(port={port}, kubeconfig_path={str(kubeconfig)!r})"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url + "/version")
            result = _run(url, Path(tmp))
            result["emulator_requests_per_second"] = round(
                asyncio.run(_ceiling(url, CEILING_SECONDS)), 1
            )
            result.update(_baseline(url))
            result["cpu_ratio_to_kopf_noop"] = round(
                result["operator_cpu_ms_per_reconcile"]
                / max(result["kopf_noop_cpu_ms_per_event"], 1e-9),
                2,
            )
        finally:
            emulator.terminate()
            emulator.wait(30)
    result["goals"] = {"operator_cpu_ms_per_change_max": 3.0, "rss_kib_per_checkpoint_max": 50.0}
    result["cpu_count"] = os.cpu_count()
    result["load_average_at_end"] = os.getloadavg()
    name = (
        "operator_scale.json"
        if n_checkpoints == SIZES[-1]
        else f"operator_scale_{n_checkpoints}.json"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> dict[str, Any]:
    """Every size (or ``CAIRN_BENCH_CHECKPOINTS`` only); results by size."""
    only = os.environ.get("CAIRN_BENCH_CHECKPOINTS")
    sizes = (int(only),) if only else SIZES
    return {str(n): measure(n) for n in sizes}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
