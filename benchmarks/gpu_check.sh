#!/usr/bin/env bash
# GPU check of issues #14 and #30 on a CUDA machine, offline: one JSON of results (benchmarks/gpu_check.py).
# Needs a Python with torch, transformers, peft, accelerate, pandas and pyarrow; snakemake, python-sat, lm-eval,
# gguf and pytest may be missing.
#     bash benchmarks/gpu_check.sh [python]          (at most 8 minutes; results in ${OUT:-.}/gpu_check.json)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
RESULTS=${OUT:-.}/gpu_check.json
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
# --no-build-isolation: the build backend must come from this Python (no registry); without it, use src/ as is
"$PY" -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD/src:$PYTHONPATH"
rm -f "$RESULTS"
# each part in its own process under its own limit (8 minutes in all); every entry is written as it ends
timeout 60 "$PY" benchmarks/gpu_check.py --device cuda --part correctness --out "$RESULTS" --append
timeout 140 "$PY" benchmarks/gpu_check.py --device cuda --part stages --out "$RESULTS" --append
timeout 270 "$PY" benchmarks/gpu_check.py --device cuda --part 8b --out "$RESULTS" --append
cat "$RESULTS"
