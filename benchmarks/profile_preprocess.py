"""Where the caption and CLIP stages' end-to-end time goes besides the model: the decode
workers alone (no model), per core and as a pool, with and without tokenising, and the share of a
model step the GPU is busy (torch.profiler's kernel time over the step's wall time).

    python benchmarks/profile_preprocess.py --workers 15
    python benchmarks/profile_preprocess.py --size tiny --images 64 --workers 2     # CPU smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_caption_clip import blip, clip, prompt_pair
from common import device, report, sync, timed
from images import image_set


def rate(spec, items: list, workers: int, batch: int, tokenizer=None) -> float:  # type: ignore[no-untyped-def]
    """Items/s the Preprocessor hands over, nothing consuming them."""
    from surd.models.preprocess import Preprocessor

    with Preprocessor(spec, workers, tokenizer=tokenizer) as pre:
        for _ in pre.batches(items[: batch * 2], batch):  # start the pool
            pass
        t0 = time.perf_counter()
        n = sum(len(k) for k, _ in pre.batches(items, batch))
    return n / (time.perf_counter() - t0)


def gpu_busy(step) -> float | None:  # type: ignore[no-untyped-def]
    """Share of one step's wall time with a kernel running (None on CPU)."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    step()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        step()
        sync()
        wall = time.perf_counter() - t0
    cuda = torch.autograd.DeviceType.CUDA
    kernels = sum(e.device_time_total for e in prof.key_averages() if e.device_type == cuda) / 1e6
    return round(kernels / wall, 3)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=["base", "tiny"])
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--inline-images", type=int, default=384)
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from surd.models.blip_caption import BlipCaptioner
    from surd.models.clip_score import ClipScorer
    from surd.models.preprocess import Preprocessor
    from surd.stages.captions_params import CaptionParams

    dev = device()
    blobs = image_set(args.images)
    results = []
    model, tok = clip(args.size, dev)
    scorer = ClipScorer(model, tok)
    items = [(i, b, prompt_pair(i)) for i, b in enumerate(blobs)]
    bare = [(i, b, ()) for i, b in enumerate(blobs)]
    few = args.inline_images
    with Preprocessor(scorer.spec, 0, tokenizer=tok) as pre:
        _, d = next(iter(pre.batches(items[:1024], 1024)))
    r = {
        "bench": "profile_clip",
        "size": args.size,
        "workers": args.workers,
        "one_core_decode_per_s": round(rate(scorer.spec, bare[:few], 0, 256), 1),
        "one_core_decode_tokenise_per_s": round(rate(scorer.spec, items[:few], 0, 256, tok), 1),
        "pool_decode_per_s": round(rate(scorer.spec, bare, args.workers, 1024), 1),
        "pool_decode_tokenise_per_s": round(rate(scorer.spec, items, args.workers, 1024, tok), 1),
        "model_step_gpu_busy": gpu_busy(lambda: scorer.score_tokens(d.pixels, d.tokens)),
        "model_step_s": round(timed(lambda: scorer.score_tokens(d.pixels, d.tokens), 3), 4),
    }
    report(r, args.out)
    results.append(r)

    model, proc = blip(args.size, dev)
    prompt_len = len(proc.tokenizer("a picture of").input_ids) - 1
    cfg = CaptionParams(num_beams=3, max_length=prompt_len + 20, min_length=prompt_len + 20, search="lavis")
    cap = BlipCaptioner(model, proc, cfg)
    with Preprocessor(cap.spec, 0) as pre:
        _, d = next(iter(pre.batches(bare[:256], 256)))
    r = {
        "bench": "profile_caption",
        "size": args.size,
        "workers": args.workers,
        "one_core_decode_per_s": round(rate(cap.spec, bare[:few], 0, 256), 1),
        "pool_decode_per_s": round(rate(cap.spec, bare, args.workers, 256), 1),
        "model_step_gpu_busy": gpu_busy(lambda: cap.caption(d.pixels)),
        "model_step_s": round(timed(lambda: cap.caption(d.pixels), 2), 4),
    }
    report(r, args.out)
    results.append(r)
    return results


if __name__ == "__main__":
    main()
