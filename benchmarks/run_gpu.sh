#!/usr/bin/env bash
# GPU benchmarks in one call (the device machine: python3 with torch; missing wheels in .whl/).
#   benchmarks/run_gpu.sh                   the prepared check (gpu_check.py: A/B of every change,
#                                           stages as stages), within $BUDGET_S seconds (460)
#   benchmarks/run_gpu.sh check caption     only those, in that order
#                                           (gpu_check | check | embed | caption | clip | profile | adapter)
# Results go to $OUT/gpu_check.jsonl and $OUT/bench.jsonl, one JSON object per line, flushed as they come.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; J="$OUT/bench.jsonl"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
WORKERS=$(( $(nproc) - 1 ))
cd "$(dirname "$0")"
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then ARGS=(gpu_check); fi
for part in "${ARGS[@]}"; do
  echo "== $part $(date +%T)"
  case $part in
    gpu_check)  # the prepared run: every section in the budget, a JSON line each as it finishes
      python3 gpu_check.py --budget-s "${BUDGET_S:-460}" --scratch "${SCRATCH:-/tmp}" \
        --out "$OUT/gpu_check.jsonl" 2>&1 | grep -v '^WARNING' ;;
    check)  # compiled vs eager embeddings on the same 512 prompts, and a float32 reference
      python3 check_embed_compiled.py --preset llama-7b --prompts 512 --out "$J" 2>&1 | tail -3 ;;
    embed)  # the GPU default (each block compiled), with where the time goes and the writer's rate
      python3 bench_embed.py --preset llama-7b --prompts 20000 --compile --breakdown --writer 2048 \
        --out "$J" 2>&1 | tail -3
      python3 bench_embed.py --preset llama-13b --prompts 20000 --compile --out "$J" 2>&1 | tail -3 ;;
    caption)  # both searches, beam 3, batch 256 and 512: end to end and the model alone
      python3 bench_caption_clip.py --size base --images 8192 --workers "$WORKERS" --caption-batch 256 512 \
        --beams 3 --skip clip --out "$J" 2>&1 | tail -8 ;;
    clip)
      python3 bench_caption_clip.py --size base --images 32768 --workers "$WORKERS" --skip caption \
        --out "$J" 2>&1 | tail -2 ;;
    profile)  # the decode workers alone, with and without tokenising; GPU busy share of a model step
      python3 profile_preprocess.py --workers "$WORKERS" --out "$J" 2>&1 | tail -2 ;;
    adapter)
      python3 bench_adapter_step.py --size sd15 --batch 16 --steps 20 --out "$J" 2>&1 | tail -4 ;;
    *) echo "unknown part: $part (gpu_check | check | embed | caption | clip | profile | adapter)" >&2; exit 2 ;;
  esac
done
echo "== done $(date +%T)"
