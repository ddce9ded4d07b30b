"""A retention run as ``cairn gc`` arguments, both ways: the one place the flags are spelled.

``cairn gc`` registers and parses its flags here, and the operator's GC Job renders its command
line here, so a policy survives the trip through a container's arguments unchanged
(``from_namespace(parse(to_arguments(o))) == o``). Torch-free.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from cairn_agent.storage.retention.plan import RetentionPolicy

COMMAND = "gc"
"""The ``cairn`` subcommand that runs retention offline."""


@dataclass(frozen=True, kw_only=True)
class GcOptions:
    """What one ``cairn gc`` run should do."""

    policy: RetentionPolicy = field(default_factory=RetentionPolicy)
    """Retention policy (keep last / keep every / pinned)."""
    protect: frozenset[int] = frozenset()
    """Extra iterations kept whatever the policy says (e.g. the operator's resume point)."""
    generation: int | None = None
    """Restart generation to act as; None means the root's current one."""
    deep: bool = False
    """Checksum files while looking for the newest verified checkpoint."""
    dry_run: bool = False
    """Only plan and print."""

    def __post_init__(self) -> None:
        if any(it < 0 for it in self.protect):
            raise ValueError(f"protected iterations must be >= 0, got {sorted(self.protect)}")
        object.__setattr__(self, "protect", frozenset(self.protect))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of ``GcOptions`` and ``--delete-all`` (the caller adds the root)."""
    parser.add_argument("--keep-last", type=int, metavar="N", help="keep the newest N")
    parser.add_argument(
        "--keep-every", type=int, metavar="K", help="also keep iterations divisible by K"
    )
    parser.add_argument(
        "--pin", type=int, nargs="+", default=[], metavar="I", help="never delete these"
    )
    parser.add_argument(
        "--protect",
        type=int,
        nargs="+",
        default=[],
        metavar="I",
        help="also keep these (e.g. the operator's resume point)",
    )
    parser.add_argument(
        "--generation",
        type=int,
        metavar="G",
        help="act as restart generation G (default: the root's current generation)",
    )
    parser.add_argument("--deep", action="store_true", help="verify with checksums, not sizes")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--delete-all",
        action="store_true",
        help="delete every checkpoint and the tracker (deletionPolicy: Delete)",
    )


def from_namespace(args: argparse.Namespace) -> GcOptions:
    """The options parsed by ``add_arguments``; ``ValueError`` for an invalid policy."""
    return GcOptions(
        policy=RetentionPolicy(
            keep_last=args.keep_last, keep_every=args.keep_every, pinned=frozenset(args.pin)
        ),
        protect=frozenset(args.protect),
        generation=args.generation,
        deep=args.deep,
        dry_run=args.dry_run,
    )


def to_arguments(root: str, options: GcOptions) -> list[str]:
    """``cairn`` arguments that run ``options`` on ``root``: ``["gc", root, flags...]``."""
    policy = options.policy
    args = [COMMAND, root]
    if policy.keep_last is not None:
        args += ["--keep-last", str(policy.keep_last)]
    if policy.keep_every is not None:
        args += ["--keep-every", str(policy.keep_every)]
    if policy.pinned:
        args += ["--pin", *(str(p) for p in sorted(policy.pinned))]
    if options.protect:
        args += ["--protect", *(str(p) for p in sorted(options.protect))]
    if options.generation is not None:
        args += ["--generation", str(options.generation)]
    if options.deep:
        args.append("--deep")
    if options.dry_run:
        args.append("--dry-run")
    return args


def delete_all_arguments(root: str) -> list[str]:
    """``cairn`` arguments that remove every checkpoint under ``root`` (deletionPolicy Delete)."""
    return [COMMAND, root, "--delete-all"]
