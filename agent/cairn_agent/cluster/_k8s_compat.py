"""The one place that reaches past the ``kubernetes`` client's public API (pinned: 37.0.2).

``kubernetes.config.load_incluster_config`` hard-codes the service-account paths under
``/var/run/secrets/kubernetes.io/serviceaccount`` and re-reads the token file at most once a
minute. ``InClusterConfigLoader`` (public class, not exported from ``kubernetes.config``) takes the
paths as constructor arguments; the re-read period is only its private
``_token_refresh_period``. Tests need both: a temporary directory standing in for the pod's
service account, and a token rotation seen in well under a minute. Production keeps the library's
defaults (the same one-minute cadence as client-go, well inside a projected token's validity
after the kubelet rotates it). Re-check this module when bumping the pinned client version.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from kubernetes.client import Configuration
from kubernetes.config.incluster_config import InClusterConfigLoader


def load_in_cluster(
    configuration: Configuration,
    *,
    token_file: Path,
    ca_file: Path,
    token_refresh_s: float | None = None,
) -> None:
    """Fill ``configuration`` from ``$KUBERNETES_SERVICE_HOST``/``_PORT`` and the service account.

    The token file is re-read every ``token_refresh_s`` seconds (the library's minute if None)
    from the request path, so a rotated projected token is picked up without a restart. Raises
    ``kubernetes.config.ConfigException`` when the environment or the files are missing.
    """
    loader = InClusterConfigLoader(
        token_filename=str(token_file), cert_filename=str(ca_file), environ=os.environ
    )
    if token_refresh_s is not None:
        loader._token_refresh_period = dt.timedelta(seconds=token_refresh_s)
    loader.load_and_set(configuration)
