"""``cairn operator``: run the Cairn operator (kopf) against the current kubeconfig.

In a cluster it runs in the operator Deployment of the Helm chart with the in-cluster service
account. Against the ``cairn cluster`` sandbox, pass ``--server`` with the URL it prints.
"""

from __future__ import annotations

import argparse
from typing import Any

NAME = "operator"


def add_parser(subparsers: Any) -> None:
    """Register ``cairn operator``."""
    parser = subparsers.add_parser(
        NAME,
        help="run the Checkpoint operator (kopf) against the current kubeconfig",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--namespace",
        "-n",
        default=None,
        help="watch only this namespace (default: all namespaces)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics and /healthz"
    )
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="API server to use without credentials (the `cairn cluster` sandbox); default: "
        "the in-cluster service account or $KUBECONFIG",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="log warnings and errors only (not every handler run)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `cairn inspect|verify|gc` never pay for kopf's import.
    from cairn_operator.run import run as run_operator

    run_operator(
        namespace=args.namespace,
        metrics_port=args.metrics_port,
        standalone=True,
        server=args.server,
        quiet=args.quiet,
    )
    return 0
