"""Prometheus metrics of the operator, per Checkpoint (labels ``namespace``, ``name``).

Gauges are rendered at scrape time from the last observed status of each Checkpoint, so
``cairn_checkpoint_seconds_since_last_commit`` is always current; SREs alert on it (e.g. no
durable checkpoint within twice the save interval). Counters of committed and failed saves are
derived from changes of the agent's status between observations; like every Prometheus counter
they restart from zero with the process.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cairn_agent.resource import contract
from cairn_agent.resource.times import parse_time
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cairn_operator import metrics_adaptive

Key = tuple[str, str]
_LABELS = ("namespace", "name")


@dataclasses.dataclass
class _Snapshot:
    latest: int | None = None
    last_commit_ts: float | None = None
    retained_count: int = 0
    retained_bytes: int = 0
    restarts: int = 0
    in_flight: int | None = None
    adaptive: Mapping[str, Any] | None = None


class _SnapshotCollector(Collector):
    def __init__(
        self, snapshots: dict[Key, _Snapshot], lock: threading.Lock, clock: Callable[[], float]
    ) -> None:
        self._snapshots = snapshots
        self._lock = lock
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "latest": GaugeMetricFamily(
                "cairn_checkpoint_latest_committed_iteration",
                "Newest committed persistent iteration",
                labels=_LABELS,
            ),
            "age": GaugeMetricFamily(
                "cairn_checkpoint_seconds_since_last_commit",
                "Seconds since the newest committed save",
                labels=_LABELS,
            ),
            "count": GaugeMetricFamily(
                "cairn_checkpoint_retained", "Committed checkpoints retained", labels=_LABELS
            ),
            "bytes": GaugeMetricFamily(
                "cairn_checkpoint_retained_bytes", "Bytes of retained checkpoints", labels=_LABELS
            ),
            "restarts": GaugeMetricFamily(
                "cairn_checkpoint_job_restarts", "Restarts of the training job", labels=_LABELS
            ),
        }
        now = self._clock()
        with self._lock:
            items = list(self._snapshots.items())
        for key, snap in items:
            labels = list(key)
            if snap.latest is not None:
                families["latest"].add_metric(labels, snap.latest)
            if snap.last_commit_ts is not None:
                families["age"].add_metric(labels, max(0.0, now - snap.last_commit_ts))
            families["count"].add_metric(labels, snap.retained_count)
            families["bytes"].add_metric(labels, snap.retained_bytes)
            families["restarts"].add_metric(labels, snap.restarts)
        yield from families.values()
        yield from metrics_adaptive.families((key, snap.adaptive) for key, snap in items)


class Metrics:
    """The operator's metrics in their own registry (one per operator run)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._snapshots: dict[Key, _Snapshot] = {}
        self._lock = threading.Lock()
        self.registry.register(_SnapshotCollector(self._snapshots, self._lock, clock))
        self.saves_committed = Counter(
            "cairn_checkpoint_saves_committed",
            "Saves seen committed",
            _LABELS,
            registry=self.registry,
        )
        self.saves_failed = Counter(
            "cairn_checkpoint_saves_failed",
            "Saves that left flight without committing",
            _LABELS,
            registry=self.registry,
        )
        self.preemptions = Counter(
            "cairn_preemptions",
            "Preemptions announced to a job (each asks it for a save), by the signal",
            (*_LABELS, "reason"),
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "cairn_operator_reconcile_duration_seconds",
            "Duration of one handler run",
            ["handler"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.events_skipped = Counter(
            "cairn_operator_checkpoint_events_skipped",
            "Checkpoint watch events no newer than a state already reconciled or written",
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        """Expose ``/metrics`` over HTTP on ``port`` (a daemon thread)."""
        start_http_server(port, registry=self.registry)

    def observe(self, key: Key, status: Mapping[str, Any]) -> None:
        """Update the snapshot of one Checkpoint and the save counters from its status."""
        with self._lock:
            snap = self._snapshots.setdefault(key, _Snapshot())
            previous_latest, previous_flight = snap.latest, snap.in_flight
            _refresh(snap, status)
        labels = dict(zip(_LABELS, key, strict=True))
        if (
            previous_latest is not None
            and snap.latest is not None
            and snap.latest > previous_latest
        ):
            self.saves_committed.labels(**labels).inc()
        if (
            previous_flight is not None
            and snap.in_flight != previous_flight
            and (snap.latest is None or snap.latest < previous_flight)
        ):
            self.saves_failed.labels(**labels).inc()

    def forget(self, key: Key) -> None:
        """Drop a deleted Checkpoint's series."""
        with self._lock:
            self._snapshots.pop(key, None)
        for metric in (self.saves_committed, self.saves_failed):
            try:
                metric.remove(*key)
            except KeyError:
                pass


def _refresh(snap: _Snapshot, status: Mapping[str, Any]) -> None:
    latest = status.get(contract.LATEST_COMMITTED)
    snap.latest = latest if isinstance(latest, int) else snap.latest
    moment = parse_time(status.get(contract.LAST_SAVE_TIME))
    snap.last_commit_ts = moment.timestamp() if moment else snap.last_commit_ts
    retention = status.get(contract.RETENTION) or {}
    snap.retained_count = int(retention.get("retainedCount", snap.retained_count))
    snap.retained_bytes = int(retention.get("retainedBytes", snap.retained_bytes))
    snap.restarts = int((status.get(contract.RESTARTS) or {}).get("count", snap.restarts))
    flight = status.get(contract.SAVE_IN_PROGRESS)
    it = flight.get("iteration") if isinstance(flight, Mapping) else None
    snap.in_flight = it if isinstance(it, int) else None
    adaptive = status.get(contract.ADAPTIVE_INTERVAL)
    snap.adaptive = adaptive if isinstance(adaptive, Mapping) else None
