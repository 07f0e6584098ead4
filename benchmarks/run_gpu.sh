#!/usr/bin/env bash
# All GPU benchmarks in one call (the device machine: python3 with torch; missing wheels in .whl/).
# Results go to $OUT/bench.jsonl, one JSON object per line.
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; J="$OUT/bench.jsonl"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cd "$(dirname "$0")"
python3 bench_embed.py --preset llama-7b --prompts 20000 --naive 200 --out "$J" 2>&1 | tail -3
python3 bench_embed.py --preset llama-13b --prompts 20000 --out "$J" 2>&1 | tail -3
python3 bench_caption_clip.py --size base --images 8192 --workers 14 --out "$J" 2>&1 | tail -5
python3 bench_adapter_step.py --size sd15 --batch 16 --steps 20 --out "$J" 2>&1 | tail -4
