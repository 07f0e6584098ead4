#!/usr/bin/env bash
# GPU benchmarks in one call (the device machine: python3 with torch; missing wheels in .whl/).
#   benchmarks/run_gpu.sh                   all of them
#   benchmarks/run_gpu.sh caption adapter   only those (embed | caption | adapter)
# Results go to $OUT/bench.jsonl, one JSON object per line.
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
want() { for w in "${ARGS[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then ARGS=(embed caption adapter); fi
if want embed; then
  python3 bench_embed.py --preset llama-7b --prompts 20000 --naive 200 --out "$J" 2>&1 | tail -3
  python3 bench_embed.py --preset llama-13b --prompts 20000 --out "$J" 2>&1 | tail -3
fi
if want caption; then
  python3 bench_caption_clip.py --size base --images 8192 --workers "$WORKERS" --caption-batch 256 512 \
    --skip clip --out "$J" 2>&1 | tail -8
  python3 bench_caption_clip.py --size base --images 32768 --workers "$WORKERS" --skip caption --out "$J" 2>&1 | tail -2
fi
if want adapter; then
  python3 bench_adapter_step.py --size sd15 --batch 16 --steps 20 --out "$J" 2>&1 | tail -4
fi
