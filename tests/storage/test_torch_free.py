"""The storage layer imports without torch (the operator image has none)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "durable",
    "tracker",
    "manifest",
    "generation",
    "commit",
    "listing",
    "gc",
    "retention",
    "resolve",
    "layout",
]


def test_storage_modules_do_not_import_torch() -> None:
    imports = "; ".join(f"import cairn_agent.storage.{name}" for name in MODULES)
    code = f"import sys; {imports}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
