#!/usr/bin/env bash
# GPU check of issue #14 on a CUDA machine, offline. Needs a Python with torch, transformers, peft, accelerate,
# pandas and pyarrow; snakemake, python-sat, lm-eval, gguf and pytest may be missing (see benchmarks/gpu_check.py).
#     bash benchmarks/gpu_check.sh [python]          (at most 8 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
# --no-build-isolation: the build backend must come from this Python (no registry); without it, use src/ as is
"$PY" -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD/src:$PYTHONPATH"
# each part under its own limit, 8 minutes in all; results are printed as they come
if "$PY" -c "import pytest" 2>/dev/null; then
  echo "== device-parametrized tests on CUDA"
  timeout 100 "$PY" -m pytest -q -p no:cacheprovider tests -k cuda --continue-on-collection-errors
fi
timeout 140 "$PY" benchmarks/gpu_check.py --device cuda --part stages
timeout 240 "$PY" benchmarks/gpu_check.py --device cuda --part 8b
