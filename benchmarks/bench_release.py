"""Writing a release: seconds and peak memory for N accepted samples of stored 512 px JPEGs.

Builds a data root with the stage tables of N samples (real JPEGs of about `--image-kb` each,
a handful of distinct ones cycled), queues them and accepts them all with the auto policy, then
runs `create_release` in a fresh process and reports its wall time, the image bytes written per
second and the process's peak resident memory against its resident memory just before the call.

    python benchmarks/bench_release.py --samples 5000 --out benchmarks/results/release-$(hostname).jsonl
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _jpegs(count: int, target_kb: int) -> list[bytes]:
    """Distinct 512 px JPEGs of about target_kb each (smooth colour fields with grain)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        base = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
            (512, 512), Image.BICUBIC
        )
        px = np.asarray(base, dtype=np.int16)
        noisy = Image.fromarray(np.clip(px + rng.normal(0, 6, px.shape), 0, 255).astype(np.uint8))
        best = b""
        for quality in range(95, 10, -5):
            buf = io.BytesIO()
            noisy.save(buf, "JPEG", quality=quality)
            best = buf.getvalue()
            if len(best) <= target_kb * 1024:
                break
        out.append(best)
    return out


def build(root: Path, samples: int, image_kb: int, part_size: int) -> dict[str, Any]:
    from storage.schemas import OK
    from surd import chain, pipeline
    from surd.config import load_settings

    settings = load_settings(
        data_root=str(root), part_size=part_size, review={"auto_policy": "demo-margin-v1"}
    )
    data = chain.PIPELINE.data_dir(root).open()
    jpegs = _jpegs(16, image_kb)
    tables = {name: data.table(name) for name in chain.PIPELINE.tables}
    for start in range(0, samples, part_size):
        ids = [f"{i:016x}" for i in range(start, min(samples, start + part_size))]
        tables["raw_items"].write(
            {
                "sample_id": s,
                "status": OK,
                "source": "civitai",
                "source_item_id": s,
                "complex_prompt": f"masterpiece, best quality, item {s}, intricate, 8k, trending",
            }
            for s in ids
        )
        tables["images"].write(
            {"sample_id": s, "status": OK, "sha256": s, "image": jpegs[int(s, 16) % len(jpegs)]} for s in ids
        )
        tables["captions"].write(
            {"sample_id": s, "status": OK, "simple_prompt": f"a photo of item {s}"} for s in ids
        )
        tables["clip_scores"].write(
            {"sample_id": s, "status": OK, "p_simple": 0.9, "p_complex": 0.1} for s in ids
        )
    for name in chain.PIPELINE.upstream("near_duplicates"):  # a declared stage not written above
        if not tables[name].parts():
            for start in range(0, samples, part_size):
                ids = [f"{i:016x}" for i in range(start, min(samples, start + part_size))]
                tables[name].write({"sample_id": s, "status": OK} for s in ids)
    pipeline.run(settings, "near_duplicates")  # no embeddings written here: it keeps every sample
    review = pipeline.review(settings)
    image_bytes = sum(len(jpegs[i % len(jpegs)]) for i in range(samples))
    return {"review": review.auto_decided, "image_bytes": image_bytes}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def release_once(root: Path, shard_rows: int) -> dict[str, Any]:
    """In this (fresh) process: create the release; time, peak and baseline memory."""
    from surd import chain
    from surd.config import load_settings
    from surd.stages.release import create_release, manifest

    settings = load_settings(data_root=str(root), release={"shard_rows": shard_rows})
    data = chain.PIPELINE.data_dir(root).open()
    import matplotlib.pyplot  # noqa: F401  (the card's plot: imported before the baseline)

    before = _rss_mb()
    t0 = time.perf_counter()
    path = create_release(settings, data)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert path is not None
    man = manifest(path)
    return {
        "seconds": round(seconds, 2),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "rows": man["rows"],
        "shards": len(man["shards"]),
        "rows_by_split": _by_split(man["shards"], "rows"),
        "shards_by_split": _by_split(man["shards"], None),
    }


def _by_split(shards: list[dict[str, Any]], field: str | None) -> dict[str, int]:
    """Per split: the sum of a shard field, or (field None) how many shards it has."""
    out: dict[str, int] = {}
    for s in shards:
        split = s.get("split", "train")
        out[split] = out.get(split, 0) + (int(s[field]) if field else 1)
    return out


def _commit() -> str:
    run = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "surd", "storage"],
        capture_output=True,
        text=True,
    )
    return (
        run.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
        if run.returncode == 0
        else "unknown"
    )


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--image-kb", type=int, default=60, help="JPEG size (the paper's 57,603 samples: ~59 KB)")
    ap.add_argument("--part-size", type=int, default=256)
    ap.add_argument("--shard-rows", type=int, default=2000, help="release.shard_rows (the default 2000)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(release_once(args.child, args.shard_rows)))
        return None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        built = build(root, args.samples, args.image_kb, args.part_size)
        assert built["review"] == args.samples, built
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(root), "--shard-rows", str(args.shard_rows)],
            check=True,
            capture_output=True,
            text=True,
        )
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    mb = built["image_bytes"] / 2**20
    result = {
        "bench": "release",
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "commit": _commit(),
        "samples": args.samples,
        "image_mb": round(mb, 1),
        **measured,
        "image_mb_per_s": round(mb / measured["seconds"], 1),
        "peak_over_before_mb": round(measured["peak_rss_mb"] - measured["rss_before_mb"], 1),
    }
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
