"""The GPU kit's wheel bookkeeping, checked without a GPU or network.

The kit itself runs in CI as ``make gpu-check`` (CPU mode, ``.ci/run``); these cover what that
run cannot: that the post-install check on the GPU machine names a missing or too-old package,
and that the carried requirements are exact pins covering Cairn's agent requirements.
"""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpu import installed_ok, verify_wheels


def test_installed_ok_names_missing_and_too_old_packages() -> None:
    found = installed_ok.problems(["numpy>=1", "numpy<1", "cairn-no-such-package==1.0"], set())
    assert len(found) == 2
    assert any(line.startswith("numpy<1 is not met: numpy ") for line in found)
    assert "cairn-no-such-package==1.0 is not installed" in found


def test_installed_ok_follows_the_requirements_of_carried_packages() -> None:
    # megatron-core needs torch, numpy and packaging, all installed in the dev venv.
    assert installed_ok.problems(["megatron-core==0.16.1"], {"megatron-core"}) == []
    found = installed_ok.problems(["megatron-core<0"], {"megatron-core"})
    assert found == [found[0]] and "megatron-core<0 is not met" in found[0]


def test_carried_requirements_are_exact_pins_of_the_agent_packages_the_image_lacks() -> None:
    carried = [Requirement(line) for line in installed_ok.carried_requirements()]
    assert all(str(r.specifier).startswith("==") for r in carried), carried
    names = {canonicalize_name(r.name) for r in carried}
    image = set(verify_wheels.image_pins())
    agent = {canonicalize_name(Requirement(r).name) for r in verify_wheels.agent_requirements()}
    assert "torch" in image and not names & image
    assert agent <= names | image, f"agent requirements neither carried nor in the image: {agent}"
