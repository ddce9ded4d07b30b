"""``cairn cluster``: a local Kubernetes API emulator with the Checkpoint CRD installed.

It runs the test kit's API server (``cairn_operator.testing``, KMock-based, the same one the
tests use) until Ctrl-C and writes a kubeconfig for it, so ``kubectl get ckpt``, ``kubectl cairn``
and ``cairn operator`` can be tried without a real cluster. It is a sandbox: state lives in
memory and is gone when it stops. The Jobs the operator creates (retention and clean-up
``cairn gc``) run as local processes; ``--volume CLAIM=DIR`` says which local directory stands in
for a PersistentVolumeClaim (a Job mounting an unmapped claim fails, saying so). Needs the
``sandbox`` extra: ``pip install 'cairn[sandbox]'``.
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
    parser.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="CLAIM=DIR",
        help="run Jobs that mount PersistentVolumeClaim CLAIM on local directory DIR (repeatable)",
    )
    parser.set_defaults(func=run)


def parse_volumes(specs: list[str]) -> dict[str, Path]:
    """``CLAIM=DIR`` options as claim name -> absolute directory; ValueError saying what to fix."""
    claims: dict[str, Path] = {}
    for spec in specs:
        claim, sep, directory = spec.partition("=")
        if not sep or not claim or not directory:
            raise ValueError(f"--volume {spec!r}: expected CLAIM=DIR, e.g. ckpt-pvc=/tmp/ckpt")
        local = Path(directory).expanduser().resolve()
        if not local.is_dir():
            raise ValueError(f"--volume {spec!r}: {local} is not a directory; create it first")
        claims[claim] = local
    return claims


def run(args: argparse.Namespace) -> int:
    claims = parse_volumes(args.volume)
    # Imported here: the test kit is an optional extra (SandboxNotInstalledError, one line).
    from cairn_operator.testing import JobSettings, Sandbox, serve_forever

    kubeconfig = args.kubeconfig.resolve()

    def announce(sandbox: Sandbox) -> None:
        print(f"Cairn sandbox API server (Checkpoint CRD installed) at {sandbox.url}")
        print("In another shell:")
        print(f"  export KUBECONFIG={kubeconfig}")
        print("  kubectl get ckpt -A")
        print(f"  cairn operator --server {sandbox.url} --metrics-port 0   # the operator")
        for claim, directory in claims.items():
            print(f"Jobs mount PersistentVolumeClaim {claim} on {directory}")
        print("Press Ctrl-C to stop (the sandbox keeps everything in memory).", flush=True)

    jobs = JobSettings(claims=claims)
    serve_forever(args.host, args.port, kubeconfig, jobs=jobs, on_ready=announce)
    return 0
