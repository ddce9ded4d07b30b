"""Where the Kubernetes API is and how to authenticate: in-cluster, kubeconfig, or a bare URL.

Torch-free and stdlib-only apart from PyYAML. The service-account token is re-read on every
request because projected tokens rotate.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import ssl
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """How to reach the API server."""

    server: str
    """Base URL, e.g. https://10.0.0.1:443 or http://127.0.0.1:PORT."""
    token: str | None = None
    """A bearer token (kubeconfig ``user.token``)."""
    token_file: Path | None = None
    """A file holding the bearer token, re-read per request (service account, ``tokenFile``)."""
    ca_file: Path | None = None
    """CA bundle to verify the server."""
    ca_data: str | None = None
    """PEM CA data (kubeconfig ``certificate-authority-data``, decoded)."""
    insecure: bool = False
    """Skip TLS verification (emulators only)."""

    def __post_init__(self) -> None:
        if not self.server.startswith(("http://", "https://")):
            raise ValueError(f"server {self.server!r} must be an http:// or https:// URL")

    def bearer(self) -> str | None:
        """The current token, if any."""
        if self.token_file is not None:
            return self.token_file.read_text().strip() or None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS settings for https servers; None for http."""
        if not self.server.startswith("https://"):
            return None
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None, cadata=self.ca_data
        )


def in_cluster_config(sa_dir: Path = SA_DIR) -> ApiConfig | None:
    """The pod's service account, when running in a cluster."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = sa_dir / "token"
    if not host or not token.exists():
        return None
    host = f"[{host}]" if ":" in host else host
    ca = sa_dir / "ca.crt"
    return ApiConfig(
        server=f"https://{host}:{port}", token_file=token, ca_file=ca if ca.exists() else None
    )


def _named(items: list[dict[str, Any]], name: str | None, key: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(key) or {})
    return {}


def kubeconfig_config(path: Path) -> ApiConfig:
    """The current context of a kubeconfig file (server, token or tokenFile, CA, insecure)."""
    doc = yaml.safe_load(path.read_text()) or {}
    context = _named(doc.get("contexts", []), doc.get("current-context"), "context")
    cluster = _named(doc.get("clusters", []), context.get("cluster"), "cluster")
    user = _named(doc.get("users", []), context.get("user"), "user")
    if not cluster.get("server"):
        raise ValueError(f"{path}: the current context names no cluster server")
    ca_data = cluster.get("certificate-authority-data")
    ca_file = cluster.get("certificate-authority")
    token_file = user.get("tokenFile")
    return ApiConfig(
        server=str(cluster["server"]),
        token=user.get("token"),
        token_file=Path(token_file) if token_file else None,
        ca_file=(path.parent / ca_file) if ca_file else None,
        ca_data=base64.b64decode(ca_data).decode() if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


def load_api_config(
    api_url: str | None = None, kubeconfig: str | Path | None = None
) -> ApiConfig | None:
    """An explicit URL, else an explicit kubeconfig, else in-cluster, else ``$KUBECONFIG``."""
    if api_url:
        return ApiConfig(server=api_url, insecure=True)
    if kubeconfig:
        return kubeconfig_config(Path(kubeconfig))
    found = in_cluster_config()
    if found is not None:
        return found
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return kubeconfig_config(Path(env)) if env else None
