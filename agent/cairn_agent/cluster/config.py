"""Where the Kubernetes API is and how to authenticate, through the official ``kubernetes`` client.

First match wins: an explicit server URL (the sandbox: no credentials, TLS unverified), an
explicit kubeconfig, the pod's service account, ``$KUBECONFIG``, ``~/.kube/config``. Kubeconfigs
are read by ``kubernetes.config`` itself, so every form it supports works: the current or a named
context, client certificates (files or data), bearer tokens and ``tokenFile``, exec credential
plugins (re-run when their credential expires), OIDC and other auth providers, ``proxy-url`` and
``tls-server-name``; ``HTTPS_PROXY``/``NO_PROXY`` apply too. The service-account token is re-read
as the kubelet rotates it. Torch-free.

Retries. Every client gets :func:`retry_policy`: urllib3's ``Retry``, which the client's
transport already runs each request through, retries 409, 429 and 5xx answers with exponential
backoff and jitter and honours ``Retry-After`` (capped), with no extra dependency. Connection
and read errors are *not* retried there: urllib3 logs a warning per such retry, and its sleeps
cannot be interrupted, so the callers (the status reporter's sender, the Checkpoint watcher) retry
those themselves, with their own backoff, bounded logging and prompt shutdown.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.config import ConfigException, load_kube_config
from urllib3.util.retry import Retry

from cairn_agent.cluster import _k8s_compat

log = logging.getLogger(__name__)

# Not kubernetes.config's KUBE_CONFIG_DEFAULT_LOCATION: that one froze $KUBECONFIG at import.
DEFAULT_KUBECONFIG = "~/.kube/config"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's service account (``token``, ``ca.crt``)."""
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
"""Answers that are retried: conflicts, throttling, and server-side failures."""
# Worst case for one call against a throttling server: 3 waits of at most 10 s. Bounded because
# a start-up read (the published resume point) waits for it while the other ranks wait too.
_STATUS_RETRIES = 3
_BACKOFF_FACTOR_S = 0.5
_BACKOFF_MAX_S = 4.0
_RETRY_AFTER_MAX_S = 10  # a server asking for longer gets the next attempt sooner


def retry_policy() -> Retry:
    """Retries of 409/429/5xx answers: up to 3, backoff up to 4 s, Retry-After honoured (up to
    10 s).

    Merge patches of the agent's status keys carry absolute values, so resending one is safe;
    hence PATCH is retried like GET. After the last retry the answer itself is returned (and the
    client raises ``ApiException`` with its status), not a urllib3 error.
    """
    return Retry(
        total=_STATUS_RETRIES,
        connect=0,
        read=0,
        other=0,
        redirect=0,
        status=_STATUS_RETRIES,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "PATCH"}),
        backoff_factor=_BACKOFF_FACTOR_S,
        backoff_max=_BACKOFF_MAX_S,
        # No jitter: urllib3 draws it from the process-wide ``random`` module, from a background
        # thread, which would change the training script's Python RNG stream (resumes would no
        # longer be bit-exact). The reporter and the watch jitter their own retries, privately.
        backoff_jitter=0.0,
        respect_retry_after_header=True,
        retry_after_max=_RETRY_AFTER_MAX_S,
        raise_on_status=False,
    )


def _new_configuration() -> Configuration:
    configuration = Configuration()
    configuration.retries = retry_policy()
    # Watches stay open for minutes; TCP keepalive (client-go's timings) keeps idle proxies and
    # load balancers from dropping them silently.
    configuration.keep_alive = True
    return configuration


def server_configuration(url: str) -> Configuration:
    """A bare server URL with no credentials (the sandbox); an https server is not verified."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"API server {url!r} must be an http:// or https:// URL")
    configuration = _new_configuration()
    configuration.host = url.rstrip("/")
    configuration.verify_ssl = False
    return configuration


def kubeconfig_configuration(
    path: str | Path | None = None, *, context: str | None = None
) -> Configuration:
    """The ``context`` (default: current) of a kubeconfig; ``path`` may list several files
    separated by ``os.pathsep``, merged as kubectl does. Raises ValueError if it is unusable."""
    where = str(path) if path else os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    configuration = _new_configuration()
    try:
        # persist_config=False: a training job never rewrites its user's kubeconfig (the client
        # would, to store refreshed OIDC tokens).
        load_kube_config(
            config_file=where,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    # The loader reports a malformed file with assorted exceptions, not only ConfigException.
    except (ConfigException, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"kubeconfig {where}: {exc}; fix the file or pass another") from exc
    return configuration


def in_cluster_configuration(
    sa_dir: Path = SA_DIR, *, token_refresh_s: float | None = None
) -> Configuration | None:
    """The pod's service account, or None outside a pod (no ``$KUBERNETES_SERVICE_HOST`` or
    no token). The token file is re-read every ``token_refresh_s`` seconds (default: a minute)."""
    token, ca = sa_dir / "token", sa_dir / "ca.crt"
    if not os.environ.get("KUBERNETES_SERVICE_HOST") or not token.exists():
        return None
    configuration = _new_configuration()
    try:
        _k8s_compat.load_in_cluster(
            configuration, token_file=token, ca_file=ca, token_refresh_s=token_refresh_s
        )
    except ConfigException as exc:
        raise ValueError(f"in-cluster service account {sa_dir}: {exc}") from exc
    return configuration


def load_configuration(
    api_url: str | None = None, kubeconfig: str | Path | None = None
) -> Configuration | None:
    """The first configuration found (see the module docstring); None when there is none.

    Raises ValueError for one that is present but unusable (a bad URL or kubeconfig)."""
    if api_url:
        return server_configuration(api_url)
    if kubeconfig:
        return kubeconfig_configuration(kubeconfig)
    found = in_cluster_configuration()
    if found is not None:
        return found
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    if os.environ.get("KUBECONFIG") or default.exists():
        return kubeconfig_configuration()
    return None


def new_api_client(
    api_url: str | None = None, kubeconfig: str | Path | None = None
) -> ApiClient | None:
    """An ``ApiClient`` over :func:`load_configuration`; share one between the status reporter
    and the Checkpoint watcher. None when no API is configured; ValueError when one is broken."""
    configuration = load_configuration(api_url, kubeconfig)
    return None if configuration is None else ApiClient(configuration)
