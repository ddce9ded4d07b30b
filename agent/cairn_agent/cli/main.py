"""The ``cairn`` console script: ``demo``, ``inspect``, ``verify``, ``gc``, ``cluster``, ``operator``.

Exit status: 0 success; 1 a typed error (one line on stderr says what and what to do);
2 corruption (``CheckpointCorruptError``: the line names the file and the failed check);
64 a usage error; 130 interrupted. Torch-free at import: only ``cairn demo`` imports torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from cairn_agent.cli import cluster, demo, gc, inspect, operator, verify
from cairn_agent.errors import CairnError, CheckpointCorruptError

EXIT_ERROR = 1
EXIT_CORRUPT = 2
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130

_SUBCOMMANDS = (demo, inspect, verify, gc, cluster, operator)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on exit status 64, so 2 always means corruption."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``cairn`` argument parser (each subcommand module registers itself)."""
    parser = _Parser(
        prog="cairn",
        description="Cairn: Kubernetes-native checkpointing for Megatron-style training.",
        epilog="Exit status: 0 ok, 1 error, 2 corruption found, 64 usage error.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in _SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cairn`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command != operator.NAME:
        # kopf installs its own log handlers; a second root handler would print every line twice.
        _configure_logging(args.verbose)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run the selected subcommand, mapping typed errors to one stderr line and a status."""
    try:
        status: int = args.func(args)
    except CheckpointCorruptError as exc:
        return _fail(args, f"CORRUPT {exc}", EXIT_CORRUPT)
    except (CairnError, ValueError) as exc:
        # ValueError is what Cairn's config dataclasses raise, with what to change.
        return _fail(args, str(exc), EXIT_ERROR)
    except OSError as exc:
        return _fail(args, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    return status


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"cairn {args.command}: error: {message}", file=sys.stderr)
    return status


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
