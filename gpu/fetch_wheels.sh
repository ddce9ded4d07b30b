#!/usr/bin/env bash
# Fetch the wheels the GPU machine lacks (gpu/requirements.txt: exact pins, Python 3.12,
# manylinux x86-64, binary only) into the git-ignored gpu/wheels, then verify the folder:
# its size, no package twice, and that pip resolves Cairn's agent requirements for Python
# 3.12 from it plus what the machine's image holds (gpu/verify_wheels.py).
# Needs network (PyPI); run it on the development machine before borrowing the GPU one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then PY=python3; fi
DEST=gpu/wheels

# megatron-core ships manylinux_2_24/2_28 wheels and nvidia-resiliency-ext a manylinux_2_31
# one: pip matches platform tags exactly, so each one accepted is named.
PLATFORMS=()
for tag in manylinux_2_31 manylinux_2_28 manylinux_2_24 manylinux_2_17 manylinux2014; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    --dest "$DEST" -r gpu/requirements.txt
"$PY" -m gpu.verify_wheels "${PLATFORMS[@]}"
