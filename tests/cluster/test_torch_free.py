"""The agent's Kubernetes I/O imports without torch (it runs beside training, not in it)."""

from __future__ import annotations

import subprocess
import sys


def test_cluster_modules_do_not_import_torch() -> None:
    modules = ("config", "reporter", "watch", "_k8s_compat", "_backoff")
    imports = "; ".join(f"import cairn_agent.cluster.{name}" for name in modules)
    code = f"import sys; {imports}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
