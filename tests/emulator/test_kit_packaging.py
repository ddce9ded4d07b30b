"""The test kit is an optional extra: product code never loads it, and without it the commands
that need it say what to install. The CRD it serves ships inside the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cairn_operator.crds import checkpoint_crd

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_product_code_does_not_import_the_kit() -> None:
    code = (
        "import sys\n"
        "import cairn_operator.run, cairn_operator.handlers, cairn_agent.checkpointing\n"
        "import cairn_agent.cli.main\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.startswith('cairn_operator.testing') or m in ('kmock', 'celpy'))\n"
        "print(loaded)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _without_the_extra(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # `sys.modules[name] = None` makes `import name` fail as if it were not installed.
    return _python(
        "import sys\n"
        "sys.modules['kmock'] = None\n"
        "from cairn_agent.cli.main import main\n"
        f"sys.exit(main({argv!r}))\n"
    )


def test_cluster_and_demo_without_the_extra_say_what_to_install(tmp_path: Path) -> None:
    for argv in (["cluster", "--kubeconfig", str(tmp_path / "kc")], ["demo"]):
        done = _without_the_extra(argv)
        assert done.returncode == 1, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"cairn {argv[0]}: error: ")
        assert "pip install 'cairn[sandbox]'" in lines[0] and "'kmock'" in lines[0]
    assert not (tmp_path / "kc").exists()


def test_cluster_refuses_a_malformed_volume(tmp_path: Path) -> None:
    done = subprocess.run(
        ["cairn", "cluster", "--kubeconfig", str(tmp_path / "kc"), "--volume", "no-directory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "cairn cluster: error: --volume 'no-directory': expected CLAIM=DIR, e.g. ckpt-pvc=/tmp/ckpt"
    )


def test_packaged_crd_is_byte_identical_to_the_repository_crd() -> None:
    repository_crd = REPO / "crds" / "checkpoints.cairn.dev.yaml"
    assert checkpoint_crd().read_bytes() == repository_crd.read_bytes()
