"""A Kubernetes API sandbox: the emulator on a real HTTP port, with the Checkpoint CRD installed.

``Sandbox`` runs the emulator on its own event loop in a background thread, so synchronous code
(tests, ``kubectl`` subprocesses, the ``cairn cluster`` command) can use it over HTTP::

    with Sandbox() as sandbox:
        sandbox.create({"apiVersion": "cairn.dev/v1alpha1", "kind": "Checkpoint", ...})
        subprocess.run(["kubectl", "--kubeconfig", sandbox.kubeconfig, "get", "ckpt"])

Its Python helpers talk HTTP too (not the store directly), so they exercise what clients get.
Given ``jobs=JobSettings(...)``, the sandbox also runs the batch/v1 Jobs created in it as local
processes (see ``jobs``); without, Jobs stay as created and a test plays the Job controller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from cairn_agent.errors import CairnError
from kmock import Server

from cairn_operator.testing.emulator import CairnEmulator
from cairn_operator.testing.jobs import JobRunner, JobSettings
from cairn_operator.testing.registry import Served
from cairn_operator.testing.schema import DEFAULT_CRD_PATH, load_crd

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class SandboxApiError(CairnError):
    """The sandbox's API server answered a request with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def kubeconfig_text(url: str, *, namespace: str = "default") -> str:
    """A kubeconfig whose current context points at ``url`` (plain HTTP, no credentials)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "cairn-sandbox", "cluster": {"server": url, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "cairn-sandbox", "user": {}}],
        "contexts": [
            {
                "name": "cairn-sandbox",
                "context": {
                    "cluster": "cairn-sandbox",
                    "user": "cairn-sandbox",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "cairn-sandbox",
        "preferences": {},
    }
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


class Sandbox:
    """The emulator served over HTTP from a background thread; a context manager."""

    def __init__(
        self,
        crd_paths: Iterable[Path | str | Traversable] = (DEFAULT_CRD_PATH,),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        namespaces: Iterable[str] = ("default",),
        emulator_options: dict[str, Any] | None = None,
        jobs: JobSettings | None = None,
    ) -> None:
        """``crd_paths`` are installed before the server starts; ``port=0`` picks a free port;
        ``namespaces`` are created up front (writes to a missing namespace get 404, as on a real
        cluster); ``emulator_options`` go to :class:`CairnEmulator` (e.g. ``request_log_limit``);
        ``jobs``, if given, makes the sandbox run the Jobs created in it."""
        self._crds = [load_crd(path) for path in crd_paths]
        self._job_settings = jobs
        self._jobs: JobRunner | None = None
        self._host, self._port = host, port
        self._namespaces = tuple(namespaces)
        self._options = dict(emulator_options or {})
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._url: str | None = None
        self._emulator: CairnEmulator | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this Sandbox was already started; create a new one")
        self._thread = threading.Thread(target=self._run, name="cairn-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._failure is not None:
            self.stop()
            raise RuntimeError(f"the sandbox API server did not start: {self._failure!r}")
        for namespace in self._namespaces:
            if namespace != "default":
                self.create(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
                )
        self._tmpdir = tempfile.TemporaryDirectory(prefix="cairn-sandbox-")
        self.write_kubeconfig(Path(self._tmpdir.name) / "kubeconfig")
        logger.info("Kubernetes sandbox serving at %s", self.url)

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(_START_TIMEOUT_S)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start(); never die silently
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        emulator = CairnEmulator(**self._options)
        for crd in self._crds:
            emulator.install_crd(crd)
        async with emulator, Server(emulator, host=self._host, port=self._port or None) as server:
            self._emulator = emulator
            if self._job_settings is not None:
                self._jobs = JobRunner(emulator, self._job_settings)
            # A wildcard listen address is not one clients can connect to; name the loopback.
            reachable = "127.0.0.1" if self._host in ("0.0.0.0", "", "::") else self._host
            self._url = f"http://{reachable}:{server.port}"
            self._ready.set()
            await self._stop.wait()
            if self._jobs is not None:
                await self._jobs.close()
            await emulator.close_watches()

    # --- where it is ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the API server, e.g. ``http://127.0.0.1:38211``."""
        if self._url is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager")
        return self._url

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig file pointing at the sandbox (context namespace ``default``)."""
        if self._tmpdir is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager")
        return Path(self._tmpdir.name) / "kubeconfig"

    @property
    def emulator(self) -> CairnEmulator:
        """The emulator (for assertions on requests/objects; it lives on the sandbox's thread)."""
        if self._emulator is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager")
        return self._emulator

    def job_output(self, name: str, namespace: str = "default") -> str | None:
        """The tail of what a Job's pods printed, once it ran (None: not run, or not running
        Jobs: see ``jobs``)."""
        return None if self._jobs is None else self._jobs.output(namespace, name)

    def write_kubeconfig(self, path: Path | str, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for this sandbox to ``path`` and return it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(kubeconfig_text(self.url, namespace=namespace), encoding="utf-8")
        return target

    # --- a small synchronous client ------------------------------------------------------------

    def resolve(self, name: str) -> Served:
        """The served resource for a plural, singular, short name, kind or ``plural.group``."""
        wanted = name.lower()
        for served in list(self.emulator._served.values()):
            names = {served.plural, served.kind.lower(), served.label, *served.short_names}
            if wanted in names:
                return served
        raise SandboxApiError(404, "NotFound", f"the server doesn't have a resource type {name!r}")

    def path(
        self,
        kind: str,
        name: str | None = None,
        namespace: str | None = "default",
        subresource: str | None = None,
    ) -> str:
        """The API path of a resource, a collection in a namespace, or an object."""
        served = self.resolve(kind)
        base = (
            f"/apis/{served.group}/{served.version}" if served.group else f"/api/{served.version}"
        )
        if served.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        parts = [base, served.plural, name, subresource]
        return "/".join(p for p in parts if p)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        """One HTTP request to the API server; the decoded JSON answer, or SandboxApiError."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = _json_or_text(exc.read())
            message = (
                payload.get("message", str(payload)) if isinstance(payload, dict) else str(payload)
            )
            reason = payload.get("reason", exc.reason) if isinstance(payload, dict) else exc.reason
            raise SandboxApiError(exc.code, str(reason), str(message)) from None

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """POST an object (its kind from ``apiVersion``/``kind``); returns the stored object.
        As on a real server, ``status`` is dropped for kinds with a status subresource: use
        ``patch(..., subresource="status")`` afterwards."""
        served = self._served_of(obj)
        ns = namespace or obj.get("metadata", {}).get("namespace") or "default"
        result: dict[str, Any] = self.request("POST", self.path(served.label, namespace=ns), obj)
        return result

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any]:
        """GET one object."""
        result: dict[str, Any] = self.request("GET", self.path(kind, name, namespace))
        return result

    def list(
        self, kind: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The items of a list (all namespaces when ``namespace`` is None)."""
        params = {"labelSelector": label_selector} if label_selector else None
        answer = self.request("GET", self.path(kind, namespace=namespace), params=params)
        items: list[dict[str, Any]] = answer["items"]
        return items

    def patch(
        self,
        kind: str,
        name: str,
        patch: Any,
        namespace: str | None = "default",
        *,
        subresource: str | None = None,
        patch_type: str = "merge",
    ) -> dict[str, Any]:
        """PATCH an object (``patch_type``: merge, json or strategic)."""
        result: dict[str, Any] = self.request(
            "PATCH",
            self.path(kind, name, namespace, subresource),
            patch,
            content_type=_PATCH_TYPES[patch_type],
        )
        return result

    def replace(self, obj: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        """PUT an object (must carry ``metadata.resourceVersion`` for custom resources)."""
        served = self._served_of(obj)
        meta = obj.get("metadata", {})
        path = self.path(served.label, meta["name"], meta.get("namespace", "default"), subresource)
        result: dict[str, Any] = self.request("PUT", path, obj)
        return result

    def delete(self, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any]:
        """DELETE an object (it stays, with a deletionTimestamp, while finalizers remain)."""
        result: dict[str, Any] = self.request("DELETE", self.path(kind, name, namespace))
        return result

    def _served_of(self, obj: dict[str, Any]) -> Served:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        for served in list(self.emulator._served.values()):
            if served.api_version == api_version and served.kind == kind:
                return served
        raise SandboxApiError(404, "NotFound", f"no resource serves {api_version} {kind}")


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    kubeconfig_path: Path | str | None = None,
    *,
    crd_paths: Iterable[Path | str | Traversable] = (DEFAULT_CRD_PATH,),
    jobs: JobSettings | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[Sandbox], None] | None = None,
) -> None:
    """Serve a sandbox until ``stop`` is set (or Ctrl-C): what ``cairn cluster`` runs.

    Writes a kubeconfig to ``kubeconfig_path`` (if given) once serving, then calls
    ``on_ready(sandbox)`` (e.g. to print the URL). ``jobs``: run Jobs (see ``Sandbox``)."""
    waiter = stop or threading.Event()
    previous = _stop_on_sigterm(waiter)
    try:
        _serve(waiter, host, port, kubeconfig_path, crd_paths, jobs, on_ready)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm(waiter: threading.Event) -> Any:
    """SIGTERM (``kill``, a supervisor stopping it) stops the sandbox like Ctrl-C does, so its
    temporary directory is removed; the previous handler, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: waiter.set())


def _serve(
    waiter: threading.Event,
    host: str,
    port: int,
    kubeconfig_path: Path | str | None,
    crd_paths: Iterable[Path | str | Traversable],
    jobs: JobSettings | None,
    on_ready: Callable[[Sandbox], None] | None,
) -> None:
    with Sandbox(crd_paths, host=host, port=port, jobs=jobs) as sandbox:
        if kubeconfig_path is not None:
            sandbox.write_kubeconfig(kubeconfig_path)
        if on_ready is not None:
            on_ready(sandbox)
        try:
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            logger.info("Kubernetes sandbox at %s stopped", sandbox.url)
