#!/usr/bin/env bash
# make gpu-check: prove Cairn's CUDA paths in one command (gpu/README.md).
#
# GPU mode (python3 sees CUDA): installs the carried wheels (gpu/wheels) and Cairn into that
# python3's environment without network, then runs every check on the GPU.
# CPU mode (no CUDA): runs the same checks in .venv on gloo; what needs CUDA is skipped and
# named. CAIRN_GPU_MODE=gpu|cpu overrides the choice; CAIRN_GPU_OUT names the results folder
# (default gpu/out); CAIRN_GPU_PYTHON the interpreter of GPU mode (default python3);
# CAIRN_GPU_WHEELS the wheel folder it installs from (default gpu/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

has_cuda() {
    "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

GPU_PY=${CAIRN_GPU_PYTHON:-python3}
MODE=${CAIRN_GPU_MODE:-auto}
if [ "$MODE" = auto ]; then
    if has_cuda "$GPU_PY"; then MODE=gpu; else MODE=cpu; fi
fi
export CAIRN_GPU_MODE=$MODE
mkdir -p "${CAIRN_GPU_OUT:=gpu/out}"
CAIRN_GPU_OUT=$(cd "$CAIRN_GPU_OUT" && pwd)
export CAIRN_GPU_OUT PYTHONUNBUFFERED=1

install_offline() {
    # Into the interpreter that holds the machine's CUDA torch: a venv would not see it when
    # that interpreter is itself a venv's. --no-deps: gpu/requirements.txt already lists all
    # that the image lacks (gpu/verify_wheels.py proved it), and a resolving pip would re-check
    # the whole image (torch's pins on its CUDA libraries, which other packages of the image
    # may have moved) and fail offline over packages Cairn never touches. gpu/installed_ok.py
    # then checks Cairn's own requirements against what is installed.
    local log="$CAIRN_GPU_OUT/gpu-check-install.log" wheels=${CAIRN_GPU_WHEELS:-gpu/wheels}
    if [ ! -d "$wheels" ]; then
        echo "$wheels is missing: run gpu/fetch_wheels.sh beforehand and carry gpu/wheels" >&2
        exit 2
    fi
    echo "installing $wheels and Cairn offline into $("$GPU_PY" -c 'import sys; print(sys.prefix)')"
    timeout 45 "$GPU_PY" -m pip install --no-index --no-deps --no-cache-dir \
        --disable-pip-version-check --find-links "$wheels" -r gpu/requirements.txt >"$log" 2>&1 \
        || { cat "$log" >&2; echo "installing $wheels failed (log above)" >&2; exit 2; }
    if ! timeout 45 "$GPU_PY" -m pip install --no-index --no-deps --no-build-isolation \
        --disable-pip-version-check -e . >>"$log" 2>&1; then
        # The checks need Cairn importable, not a packaging proof; say so and go on.
        echo "WARNING: pip could not install Cairn (see $log); using PYTHONPATH=agent:operator" >&2
        export PYTHONPATH=$PWD/agent:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}
    fi
    # A version the image holds below what a carried wheel asks for is worth knowing, but the
    # checks show whether it matters: warn and go on.
    "$GPU_PY" -m gpu.installed_ok | tee -a "$log" || echo "WARNING: unmet requirements (above)" >&2
}

if [ "$MODE" = gpu ]; then
    install_offline
    PY=$GPU_PY
else
    [ -f .venv/.installed ] || make venv
    PY=.venv/bin/python
fi
# The checks' own bounds add up to 375 s; this one only catches a hung driver.
exec timeout 420 "$PY" -m gpu.check "$@"
