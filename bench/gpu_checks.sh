#!/usr/bin/env bash
# The GPU checks in one go, on a machine with one CUDA GPU where ftsweep and its dependencies are installed
# (about 8 minutes on one H200, 2026-12-04): pytest -m gpu, the QLoRA benchmark on the 1B shape (ftsweep vs a
# plain peft + trl script), parallel trials (trials_per_gpu 1 vs 2) and lr-find on the 1B shape. Results go to
# bench/results/ (gpu_qlora.json, parallel_scaling_gpu.json, lr_find_gpu_1b.json/.png). The 8B benchmark
# (building its random-weight checkpoint writes 16 GB) is its own command:
#   python bench/gpu_qlora.py --models 8b --cutoffs 1024 --steps 10 --out bench/results/gpu_qlora_8b.json
# Exit code: 0 when every step succeeded, else 1 (each step runs regardless of the earlier ones).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-disabled}
export FTSWEEP_BENCH_CACHE=${FTSWEEP_BENCH_CACHE:-/tmp/ftsweep-bench-cache}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "gpu_checks.sh: no CUDA GPU" >&2; exit 2; }
rc=0
step() { echo "=== $* ($(date +%T))"; "$@" || { echo "=== FAILED: $*"; rc=1; }; }
step "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
step "$PY" bench/gpu_qlora.py --models 1b --cache "$FTSWEEP_BENCH_CACHE"
step "$PY" bench/parallel_scaling.py --gpu --trials 4 --steps 30
out=$(mktemp -d)
step "$PY" -m ftsweep lr-find sweep=quickstart model=llama3_2_1b \
  model.name_or_path="$FTSWEEP_BENCH_CACHE/llama-1b-random" data=alpaca_demo trainer.precision=bf16 logger=none \
  --steps 100 --out "$out"
cp "$out/lr_find.json" bench/results/lr_find_gpu_1b.json 2>/dev/null
cp "$out/lr_find.png" bench/results/lr_find_gpu_1b.png 2>/dev/null
exit $rc
