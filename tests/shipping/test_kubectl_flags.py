"""kubectl's global flags reach the plugin in every spelling kubectl itself accepts."""

from __future__ import annotations

import pytest
from cairn_agent.cli.kubectl_client import KubectlFlags, split_global_flags


@pytest.mark.parametrize(
    ("argv", "namespace", "rest"),
    [
        (["list", "-n", "training"], "training", ["list"]),
        (["-ntraining", "list"], "training", ["list"]),
        (["list", "--namespace=training"], "training", ["list"]),
        (["--namespace", "training", "pin", "job", "100"], "training", ["pin", "job", "100"]),
        (["describe", "job"], None, ["describe", "job"]),
    ],
)
def test_namespace_flag_spellings(argv: list[str], namespace: str | None, rest: list[str]) -> None:
    flags, remaining = split_global_flags(argv)
    assert (flags.namespace, remaining) == (namespace, rest)


def test_connection_flags_are_forwarded_and_all_namespaces_only_to_lists() -> None:
    flags, rest = split_global_flags(
        ["--context", "prod", "list", "-A", "--kubeconfig=/k", "--request-timeout", "5s"]
    )

    assert rest == ["list"]
    assert flags.passthrough == ("--context=prod", "--kubeconfig=/k", "--request-timeout=5s")
    assert flags.args(namespaced=False)[-1] == "--all-namespaces"
    assert "--all-namespaces" not in flags.args(namespaced=True)


def test_a_flag_without_its_value_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="--context needs a value"):
        split_global_flags(["list", "--context"])


def test_namespace_goes_to_namespaced_calls() -> None:
    assert KubectlFlags(namespace="ml").args() == ["--namespace=ml"]
