"""Running the operator: ``run`` (blocking, for ``cairn operator``) and ``run_in_thread`` (tests).

Credentials come from kopf's defaults (in-cluster service account, else ``$KUBECONFIG``) unless
``server`` names an API server to use without credentials, as the test emulator does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import kopf

from cairn_operator.handlers import build_kopf_settings, build_registry
from cairn_operator.handlers.common import OperatorContext
from cairn_operator.metrics import Metrics
from cairn_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def _scope(namespace: str | None) -> dict[str, object]:
    return {"namespaces": [namespace]} if namespace else {"clusterwide": True}


def run(
    namespace: str | None = None,
    metrics_port: int = 8080,
    standalone: bool = True,
    *,
    settings: OperatorSettings | None = None,
    server: str | None = None,
    quiet: bool = False,
) -> None:
    """Run the operator until interrupted: cluster-wide, or for one ``namespace``.

    ``metrics_port`` 0 serves no metrics; ``quiet`` logs warnings and errors only (kopf logs
    every handler run at INFO otherwise).
    """
    ctx = OperatorContext(settings=settings or OperatorSettings(), metrics=Metrics())
    if metrics_port:
        ctx.metrics.serve(metrics_port)
        log.info("metrics on :%d/metrics", metrics_port)
    registry = build_registry(ctx, server=server)
    kopf.configure(quiet=quiet)
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=build_kopf_settings(ctx),
            standalone=standalone,
            **_scope(namespace),  # type: ignore[arg-type]
        )
    )


@dataclasses.dataclass
class RunningOperator:
    """An operator running in a background thread (see ``run_in_thread``)."""

    context: OperatorContext
    """Its settings and metrics."""
    thread: threading.Thread
    """The thread running its event loop."""
    stop_flag: threading.Event
    """Set to stop it."""


@contextmanager
def run_in_thread(
    server: str,
    *,
    settings: OperatorSettings | None = None,
    namespace: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    ready_timeout_s: float = 30.0,
) -> Iterator[RunningOperator]:
    """Run the operator against ``server`` in a thread with its own loop; stop it on exit.

    ``clock`` replaces the wall clock of the reconcile logic (tests move time forward with it).
    """
    ctx = OperatorContext(settings=settings or OperatorSettings(), metrics=Metrics())
    if clock is not None:
        ctx.clock = clock
    registry = build_registry(ctx, server=server)
    stop_flag, ready_flag = threading.Event(), threading.Event()

    def target() -> None:
        asyncio.run(
            kopf.operator(
                registry=registry,
                settings=build_kopf_settings(ctx),
                standalone=True,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                **_scope(namespace),  # type: ignore[arg-type]
            )
        )

    thread = threading.Thread(target=target, name="cairn-operator", daemon=True)
    thread.start()
    try:
        if not ready_flag.wait(ready_timeout_s):
            raise TimeoutError(f"the operator did not start within {ready_timeout_s}s")
        yield RunningOperator(context=ctx, thread=thread, stop_flag=stop_flag)
    finally:
        stop_flag.set()
        thread.join(timeout=30)
