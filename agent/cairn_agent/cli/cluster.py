"""``cairn cluster``: a local Kubernetes API emulator with the Checkpoint CRD installed.

It runs KMock-based emulation (the same one the tests use) until Ctrl-C and writes a kubeconfig
for it, so ``kubectl get ckpt``, ``kubectl cairn`` and ``cairn operator`` can be tried without a
real cluster. It is a sandbox: state lives in memory and is gone when it stops.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "cluster"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 0
DEFAULT_KUBECONFIG = Path("cairn-sandbox.kubeconfig")


def add_parser(subparsers: Any) -> None:
    """Register ``cairn cluster``."""
    parser = subparsers.add_parser(
        NAME,
        help="run a local Kubernetes API emulator with the Checkpoint CRD (until Ctrl-C)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: a free one)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=DEFAULT_KUBECONFIG,
        help=f"where to write the kubeconfig (default ./{DEFAULT_KUBECONFIG})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the sandbox pulls in the emulator, which `cairn inspect` never needs.
    from cairn_operator.sandbox import Sandbox, serve_forever

    kubeconfig = args.kubeconfig.resolve()

    def announce(sandbox: Sandbox) -> None:
        print(f"Cairn sandbox API server (Checkpoint CRD installed) at {sandbox.url}")
        print("In another shell:")
        print(f"  export KUBECONFIG={kubeconfig}")
        print("  kubectl get ckpt -A")
        print(f"  cairn operator --server {sandbox.url} --metrics-port 0   # the operator")
        print("Press Ctrl-C to stop (the sandbox keeps everything in memory).", flush=True)

    serve_forever(args.host, args.port, kubeconfig, on_ready=announce)
    return 0
