"""Near-duplicate grouping at scale: N random 512-d float16 unit vectors (CLIP ViT-B/32's width),
1% of them planted near copies of an earlier one (cosine about 0.97), grouped as the stage does
(surd.stages.near_index: index built for N, batches of `--batch` in storage order). Reports the
seconds, the peak RSS, the copies caught and any vector wrongly grouped.

    python benchmarks/bench_near_dups.py --n 1000000
    python benchmarks/bench_near_dups.py --n 2000 --dim 32           # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from surd.stages.near_index import NearGrouper  # noqa: E402  (no torch: RSS is the grouping's)


def vectors(n: int, dim: int, share: float, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """(n, dim) float16 unit rows and {copy row: original row}, each copy after its original."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float16)
    step = 65_536
    for a in range(0, n, step):  # in slices: no (n, dim) float32 array at once
        v = rng.standard_normal((min(step, n - a), dim), dtype=np.float32)
        out[a : a + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    copies = int(n * share)
    rows = np.sort(rng.choice(np.arange(n // 2, n), copies, replace=False))
    planted: dict[int, int] = {}
    for r in rows:
        src = int(rng.integers(0, r))
        if src in planted or src in planted.values():
            continue
        w = out[src].astype(np.float32) + 0.25 / np.sqrt(dim) * rng.standard_normal(dim, dtype=np.float32)
        out[r] = w / np.linalg.norm(w)
        planted[int(r)] = src
    return out, planted


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--share", type=float, default=0.01, help="planted near copies")
    ap.add_argument("--batch", type=int, default=1000, help="rows per decided batch (the stage's part_size)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    vecs, planted = vectors(args.n, args.dim, args.share)
    ids = [str(i) for i in range(args.n)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = NearGrouper(args.dim, args.threshold, args.n, vecs)
    built = time.perf_counter() - t0
    dropped: dict[int, int] = {}
    for a in range(0, args.n, args.batch):
        for k, v in enumerate(g.decide(ids[a : a + args.batch], vecs[a : a + args.batch])):
            if not v.kept:
                dropped[a + k] = int(v.of or -1)
    seconds = time.perf_counter() - t0
    caught = sum(1 for r, src in planted.items() if dropped.get(r) == src)
    result = {
        "bench": "near_duplicates",
        "n": args.n,
        "dim": args.dim,
        "index": "exact" if g.exact else "ivf-sq-fp16",
        "threshold": args.threshold,
        "seconds": round(seconds, 1),
        "train_s": round(built, 1),
        "us_per_vector": round(1e6 * seconds / args.n, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mb": round(rss0 / 1024),
        "planted": len(planted),
        "caught": caught,
        "wrongly_grouped": sum(1 for r in dropped if r not in planted),
    }
    result["cpus"] = os.cpu_count()
    line = json.dumps(result)
    print(line, flush=True)
    if args.out is not None:
        with args.out.open("a") as fh:
            fh.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
