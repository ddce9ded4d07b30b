"""``kubectl cairn``: Checkpoint resources from the command line (the ``kubectl-cairn`` plugin).

    kubectl cairn list [-A]                         Checkpoints with latest, resume point, phase
    kubectl cairn describe NAME                     spec, saved iterations, resume point, plan
    kubectl cairn pin NAME ITERATION                add to spec.retention.pinned
    kubectl cairn unpin NAME ITERATION              remove from spec.retention.pinned
    kubectl cairn resume-from NAME ITERATION|latest pin the resume point, or go back to latest
    kubectl cairn save-now NAME [--wait S]          one persistent save at the job's next step
    kubectl cairn verify NAME                       what the agent reported (exit 2 on corruption)

kubectl's ``-n/--namespace``, ``-A``, ``--context``, ``--kubeconfig``, ``--cluster``, ``--user``
and ``--request-timeout`` work anywhere after ``cairn`` (kubectl itself refuses flags placed
before a plugin's name). Every call goes through the ``kubectl`` binary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from cairn_agent.cli import formatting, kubectl_views
from cairn_agent.cli.kubectl_client import Kubectl, KubectlFlags, split_global_flags
from cairn_agent.errors import CairnError
from cairn_agent.resource import contract

EXIT_ERROR = 1
EXIT_CORRUPT = 2
EXIT_USAGE = 64
LATEST = "latest"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64 so that 2 always means corruption."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The plugin's parser (kubectl's global flags are removed before it runs)."""
    parser = _Parser(
        prog="kubectl cairn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    listing = sub.add_parser("list", help="list Checkpoints")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.set_defaults(func=cmd_list)
    describe = sub.add_parser("describe", help="show one Checkpoint in detail")
    describe.add_argument("name")
    describe.add_argument("-o", "--output", choices=("text", "json"), default="text")
    describe.set_defaults(func=cmd_describe)
    for name, func, help_text in (
        ("pin", cmd_pin, "never delete ITERATION (spec.retention.pinned)"),
        ("unpin", cmd_unpin, "let retention delete ITERATION again"),
    ):
        pin = sub.add_parser(name, help=help_text)
        pin.add_argument("name")
        pin.add_argument("iteration", type=_iteration)
        pin.set_defaults(func=func)
    resume = sub.add_parser("resume-from", help="set the resume point (an iteration or 'latest')")
    resume.add_argument("name")
    resume.add_argument("iteration", help=f"an iteration, or '{LATEST}' for LatestVerified")
    resume.set_defaults(func=cmd_resume_from)
    save_now = sub.add_parser(
        "save-now", help="ask the running job for one persistent save at its next step"
    )
    save_now.add_argument("name")
    save_now.add_argument("--reason", default="requested with kubectl cairn save-now")
    save_now.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the job's answer (exit 1 if it failed or did not answer)",
    )
    save_now.set_defaults(func=cmd_save_now)
    verify = sub.add_parser("verify", help="show the verification state the agent reported")
    verify.add_argument("name")
    verify.set_defaults(func=cmd_verify)
    return parser


def _iteration(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an iteration number") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"iteration must be >= 0, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-cairn``; returns the exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        flags, rest = split_global_flags(words)
    except ValueError as exc:
        print(f"kubectl cairn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(rest)
    try:
        status: int = args.func(args, Kubectl(flags))
    except (CairnError, ValueError) as exc:
        print(f"kubectl cairn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return status


def cmd_list(args: argparse.Namespace, kubectl: Kubectl) -> int:
    objs = kubectl.list_checkpoints()
    if args.output == "json":
        print(formatting.to_json(objs))
    elif not objs:
        where = "any namespace" if kubectl.flags.all_namespaces else "this namespace"
        print(f"No Checkpoints found in {where}.", file=sys.stderr)
    else:
        print(
            kubectl_views.list_table(objs, time.time(), all_namespaces=kubectl.flags.all_namespaces)
        )
    return 0


def cmd_describe(args: argparse.Namespace, kubectl: Kubectl) -> int:
    obj = kubectl.get_checkpoint(args.name)
    text = (
        formatting.to_json(obj)
        if args.output == "json"
        else kubectl_views.describe(obj, time.time())
    )
    print(text)
    return 0


def _pinned(obj: dict[str, Any]) -> list[int]:
    retention = (obj.get("spec") or {}).get("retention") or {}
    return sorted(int(i) for i in retention.get("pinned") or [])


def cmd_pin(args: argparse.Namespace, kubectl: Kubectl) -> int:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        pinned = sorted(set(_pinned(obj)) | {args.iteration})
        return {"retention": {"pinned": pinned}}

    updated = kubectl.update_spec(args.name, change)
    print(f"checkpoint.cairn.dev/{args.name} pinned {args.iteration} (pinned: {_pinned(updated)})")
    return 0


def cmd_unpin(args: argparse.Namespace, kubectl: Kubectl) -> int:
    def change(obj: dict[str, Any]) -> dict[str, Any]:
        pinned = _pinned(obj)
        if args.iteration not in pinned:
            raise ValueError(
                f"iteration {args.iteration} is not pinned on {args.name} (pinned: {pinned})"
            )
        return {"retention": {"pinned": [i for i in pinned if i != args.iteration]}}

    updated = kubectl.update_spec(args.name, change)
    print(
        f"checkpoint.cairn.dev/{args.name} unpinned {args.iteration} (pinned: {_pinned(updated)})"
    )
    return 0


def resume_patch(target: str) -> dict[str, Any]:
    """The ``spec.resume`` merge patch for ``resume-from``: Pinned at an iteration, or back to
    LatestVerified (the iteration removed with a JSON merge patch null)."""
    if target == LATEST:
        return {"resume": {"policy": "LatestVerified", "iteration": None}}
    return {"resume": {"policy": "Pinned", "iteration": _iteration_or_error(target)}}


def _iteration_or_error(text: str) -> int:
    try:
        return _iteration(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{exc}; give an iteration number or '{LATEST}'") from exc


def cmd_resume_from(args: argparse.Namespace, kubectl: Kubectl) -> int:
    patch = resume_patch(args.iteration)

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        _warn_if_unknown(obj, patch["resume"]["iteration"])
        return patch

    kubectl.update_spec(args.name, change)
    shown = (
        "the latest verified checkpoint"
        if args.iteration == LATEST
        else f"iteration {args.iteration}"
    )
    print(f"checkpoint.cairn.dev/{args.name} will resume from {shown} at the next (re)start")
    return 0


def save_now_patch(reason: str, now: float) -> dict[str, Any]:
    """The ``spec.saveNow`` merge patch: a new request id makes it a new request."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    request_id = f"manual-{stamp:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    return {
        "saveNow": {
            "requestId": request_id,
            "reason": reason[:256],
            "requestedAt": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }


def cmd_save_now(args: argparse.Namespace, kubectl: Kubectl) -> int:
    patch = save_now_patch(args.reason, time.time())
    request_id = patch["saveNow"]["requestId"]
    kubectl.update_spec(args.name, lambda obj: patch)
    print(f"checkpoint.cairn.dev/{args.name} save requested ({request_id})")
    if args.wait <= 0:
        return 0
    answer = _wait_for_answer(kubectl, args.name, request_id, args.wait)
    if answer is None:
        print(f"no answer from the job within {args.wait:g}s (is it running?)", file=sys.stderr)
        return 1
    if answer.get("outcome") != "Committed":
        print(f"the save failed: {answer.get('message')}", file=sys.stderr)
        return 1
    print(f"iteration {answer.get('iteration')} committed in {answer.get('saveSeconds')}s")
    return 0


def _wait_for_answer(
    kubectl: Kubectl, name: str, request_id: str, timeout: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = kubectl.get_checkpoint(name).get("status") or {}
        answer = status.get(contract.LAST_SAVE_REQUEST)
        if isinstance(answer, dict) and answer.get("requestId") == request_id:
            return answer
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return None


def _warn_if_unknown(obj: dict[str, Any], iteration: int | None) -> None:
    saved = {s["iteration"] for s in kubectl_views.saved_iterations(obj)}
    if iteration is not None and saved and iteration not in saved:
        # Only a warning: the agent reports a bounded list, older checkpoints may still exist.
        print(
            f"warning: iteration {iteration} is not among the saved iterations the agent "
            f"reported ({sorted(saved)}); the operator will report whether it exists",
            file=sys.stderr,
        )


def cmd_verify(args: argparse.Namespace, kubectl: Kubectl) -> int:
    obj = kubectl.get_checkpoint(args.name)
    text, ok = kubectl_views.verification_report(obj)
    print(text)
    if not ok:
        print(
            f"kubectl cairn verify: {args.name}: the agent reported corrupt iterations",
            file=sys.stderr,
        )
    return 0 if ok else EXIT_CORRUPT


__all__ = ["KubectlFlags", "build_parser", "main", "resume_patch"]
