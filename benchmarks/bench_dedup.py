"""The near-duplicate search: its speed over random hashes, and its decisions on labelled pictures.

    python benchmarks/bench_dedup.py --hashes 1000000      # build and query, a part at a time
    python benchmarks/bench_dedup.py --labelled 10000      # generated pictures + planted copies

`--hashes N` feeds N random keys (the images stage's `phash` and `sha256` columns) to the index
in parts of `--part` (the stage's part size), as the images stage does: each part is checked
against every kept image before it and then kept. Prints {"hashes", "seconds", "peak_rss_mb"}.

`--labelled N` makes N items (benchmarks/synthetic.py: distinct pictures in families of four, and
about 2% planted copies: exact, re-encoded, resized, cropped), normalises each through the images
stage's own `normalise`, and decides them in order twice: on the first signals alone (the 64-bit
dHashes of the whole images and of their zoomed views, to see the distances), then with the
confirming 256-bit DCT hashes at the settings' limits.
Prints, for each run, the false duplicates (a distinct picture dropped), the missed copies, the
precision and recall, and the distances that chose the thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import synthetic  # noqa: E402

from surd.stages.dedup import VIEWS, Deduper  # noqa: E402
from surd.stages.images_params import ImageParams  # noqa: E402
from surd.stages.normalise import ZOOMS, normalise  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hexes(rng: np.random.Generator, n: int, words: int) -> list[str]:
    return [bytes(r).hex() for r in rng.integers(0, 256, (n, 8 * words), dtype=np.uint8)]


def _deduper(cfg: ImageParams, confirm: int, zoom_confirm: int) -> Deduper:
    zoom = cfg.zoom_max_distance
    return Deduper(cfg.phash_max_distance, confirm, zoom_distance=zoom, zoom_confirm=zoom_confirm)


def speed(n: int, part: int, cfg: ImageParams) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dedup = _deduper(cfg, cfg.confirm_max_distance, cfg.zoom_confirm_max_distance)
    dropped = 0
    start = time.perf_counter()
    for lo in range(0, n, part):
        m = min(part, n - lo)
        dh, dct, sha = _hexes(rng, m, 1), _hexes(rng, m, 4), _hexes(rng, m, 4)
        colour = [bytes(c).hex() for c in rng.integers(0, 256, (m, 3), dtype=np.uint8)]
        views = _hexes(rng, m, 5 * VIEWS)
        keys = [a + b + c + v for a, b, c, v in zip(dh, colour, dct, views, strict=True)]
        ids = [f"{k:016x}" for k in range(lo, lo + m)]
        dropped += sum(x is not None for x in dedup.decide(ids, sha, keys))
    seconds = time.perf_counter() - start
    return {
        "hashes": n,
        "part": part,
        "seconds": round(seconds, 2),
        "us_per_hash": round(seconds / n * 1e6, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "dropped": dropped,
    }


def _keys(args: tuple[tuple[int, str | None, int | None], int]) -> tuple[str, str]:
    img = normalise(synthetic.body(*args), ImageParams())
    return img.sha256, img.phash


def labelled(n: int, part: int, cfg: ImageParams, workers: int) -> list[dict[str, Any]]:
    items = synthetic.items(n)
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        keys = list(pool.map(_keys, [(it, k) for k, it in enumerate(items)], chunksize=64))
    made = time.perf_counter() - start
    ids = [f"{k:016x}" for k in range(n)]
    out = []
    for confirm, zoom_confirm in ((256, 256), (cfg.confirm_max_distance, cfg.zoom_confirm_max_distance)):
        dedup = _deduper(cfg, confirm, zoom_confirm)
        found = []
        for lo in range(0, n, part):
            hi = min(n, lo + part)
            found += dedup.decide(ids[lo:hi], [k[0] for k in keys[lo:hi]], [k[1] for k in keys[lo:hi]])
        false = [m for it, m in zip(items, found, strict=True) if m is not None and it[1] is None]
        copies = [(it, m) for it, m in zip(items, found, strict=True) if it[1] is not None]
        caught = [(it, m) for it, m in copies if m is not None]
        by_kind = {
            k: f"{sum(1 for it, m in copies if it[1] == k and m)}/{sum(1 for it, _ in copies if it[1] == k)}"
            for k in synthetic.KINDS
        }
        near = [m for _, m in caught if m.signal == "near" and m.zoom is None]
        zoomed = [m for _, m in caught if m.zoom is not None]
        out.append(
            {
                "items": n,
                "distinct": n - len(copies),
                "planted": len(copies),
                "dhash_max": cfg.phash_max_distance,
                "confirm_max": confirm,
                "zoom_max": cfg.zoom_max_distance,
                "zoom_confirm_max": zoom_confirm,
                "false_duplicates": len(false),
                "missed_duplicates": len(copies) - len(caught),
                "caught_by_kind": by_kind,
                "precision": round(len(caught) / max(1, len(caught) + len(false)), 4),
                "recall": round(len(caught) / max(1, len(copies)), 4),
                "copies_dct256_max": max((m.dct256 or 0 for m in near), default=None),
                "copies_dhash64_max": max((m.dhash64 or 0 for m in near), default=None),
                "crops_by_zoom": {z: sum(1 for m in zoomed if m.zoom == z) for z in ZOOMS},
                "zoomed_dct256_max": max((m.dct256 or 0 for m in zoomed), default=None),
                "false_dct256_min": min((m.dct256 for m in false if m.dct256 is not None), default=None),
                "false_by_zoom": sum(1 for m in false if m.zoom is not None),
                "seconds_to_make_and_hash": round(made, 1),
            }
        )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hashes", type=int, help="time the index over this many random hashes")
    p.add_argument("--labelled", type=int, help="decide this many generated items with planted copies")
    p.add_argument("--part", type=int, default=256, help="items per part (the stage's part_size)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes making pictures")
    a = p.parse_args(argv)
    if not a.hashes and not a.labelled:
        p.error("give --hashes N or --labelled N")
    cfg = ImageParams()
    results = [speed(a.hashes, a.part, cfg)] if a.hashes else labelled(a.labelled, a.part, cfg, a.workers)
    for r in results:
        print(json.dumps(r), flush=True)
    return results


if __name__ == "__main__":
    main()
