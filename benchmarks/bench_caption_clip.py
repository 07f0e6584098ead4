"""BLIP captioning and the CLIP filter, end to end from stored 512² JPEGs (decode and
preprocessing in worker processes included), with random weights of the real architectures.

    python benchmarks/bench_caption_clip.py --size base --images 8192 --workers 14
    python benchmarks/bench_caption_clip.py --size tiny --images 64 --workers 0   # CPU smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import device, peak_gb, report, timed
from images import image_set


def blip(size: str, dev: torch.device):  # type: ignore[no-untyped-def]
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from surd.models import tiny

    if size == "tiny":
        model, proc = tiny.blip(0)
    else:  # BLIP base (ViT-B/16 at 384 px, BERT-base decoder), as Salesforce/blip-image-captioning-base
        tok = tiny.blip_tokenizer()
        cfg = BlipConfig(
            text_config=dict(
                bos_token_id=tok.bos_token_id,
                pad_token_id=tok.pad_token_id,
                sep_token_id=tok.sep_token_id,
                eos_token_id=tok.sep_token_id,
            )
        )
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(cfg).eval()
        proc = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return model.to(dev, dtype), proc


def clip(size: str, dev: torch.device):  # type: ignore[no-untyped-def]
    import open_clip

    from surd.models import tiny

    if size == "tiny":
        model, _, tok = tiny.clip(0)
    else:
        model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        tok = open_clip.get_tokenizer("ViT-B-32")
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    return model.eval().to(dev, dtype), tok


WORDS = (
    "cat dog woman man castle forest city portrait landscape dragon robot girl boy ship sunset river "
    "masterpiece best quality highly detailed 8k trending on artstation octane render cinematic lighting "
    "volumetric fog golden hour sharp focus intricate concept art unreal engine by greg rutkowski"
).split()


def prompt_pair(i: int) -> tuple[str, str]:
    """A distinct (simple, complex) pair per image, so the tokenizer's word cache sees real variety."""
    import random

    rng = random.Random(i)
    simple = "a picture of " + " ".join(rng.choice(WORDS[:16]) for _ in range(rng.randint(3, 9)))
    complex_ = ", ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 70)))
    return simple, f"{complex_} {i}"


def caption_speed(cap, items: list, bs: int, workers: int, dev: torch.device) -> dict:  # type: ignore[no-untyped-def]
    """End to end from stored JPEGs, and the model alone on one decoded batch (its ceiling)."""
    from surd.models.preprocess import Preprocessor

    with Preprocessor(cap.spec, workers) as pre:  # warm-up: kernels, allocator; one batch kept
        for _, d in pre.batches(items[: bs * 2], bs):
            cap.caption(d.pixels)
    torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None

    def run() -> int:
        with Preprocessor(cap.spec, workers) as pre:
            return sum(len(cap.caption(d.pixels)) for _, d in pre.batches(items, bs))

    seconds = timed(run)
    reps = 3
    model_only = timed(lambda: [cap.caption(d.pixels) for _ in range(reps)])
    return {
        "images_per_s": round(len(items) / seconds, 1),
        "model_only_images_per_s": round(reps * d.pixels.shape[0] / model_only, 1),
        "peak_mem_gb": peak_gb(),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=["base", "tiny"])
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--caption-batch", type=int, nargs="+", default=[256])
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    ap.add_argument(
        "--searches", nargs="+", default=["lavis", "generate"], choices=["lavis", "transformers", "generate"]
    )
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--clip-batch", type=int, default=1024)
    ap.add_argument("--skip", nargs="*", default=[], choices=["caption", "clip"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from surd.models.blip_caption import BlipCaptioner
    from surd.models.clip_score import ClipScorer
    from surd.models.preprocess import Preprocessor
    from surd.stages.captions_params import CaptionParams

    dev = device()
    blobs = image_set(args.images)
    results = []
    if "caption" not in args.skip:
        model, proc = blip(args.size, dev)
        items = [(i, b, ()) for i, b in enumerate(blobs)]
        prompt_len = len(proc.tokenizer("a picture of").input_ids) - 1
        total = prompt_len + args.new_tokens  # forced length: random weights would stop anywhere
        for search in args.searches:
            for beams in args.beams:
                for bs in args.caption_batch:
                    cfg = CaptionParams(num_beams=beams, max_length=total, min_length=total, search=search)
                    cap = BlipCaptioner(model, proc, cfg)
                    r = {
                        "bench": "caption",
                        "size": args.size,
                        "search": search,
                        "beams": beams,
                        "new_tokens": args.new_tokens,
                        "batch": bs,
                        "images": args.images,
                        "workers": args.workers,
                        **caption_speed(cap, items, bs, args.workers, dev),
                    }
                    report(r, args.out)
                    results.append(r)
        del model
    if "clip" not in args.skip:
        model, tok = clip(args.size, dev)
        scorer = ClipScorer(model, tok)
        items = [(i, b, prompt_pair(i)) for i, b in enumerate(blobs)]

        def run_clip() -> int:
            with Preprocessor(scorer.spec, args.workers, tokenizer=tok) as pre:
                return sum(
                    len(scorer.score_tokens(d.pixels, d.tokens))
                    for _, d in pre.batches(items, args.clip_batch)
                )

        with Preprocessor(scorer.spec, args.workers, tokenizer=tok) as pre:  # warm-up; one batch kept
            for _, d in pre.batches(items[: args.clip_batch], args.clip_batch):
                scorer.score_tokens(d.pixels, d.tokens)
        seconds = timed(run_clip)
        model_only = timed(lambda: [scorer.score_tokens(d.pixels, d.tokens) for _ in range(5)])
        r = {
            "bench": "clip_filter",
            "size": args.size,
            "batch": args.clip_batch,
            "images": args.images,
            "samples_per_s": round(args.images / seconds, 1),
            "model_only_samples_per_s": round(5 * d.pixels.shape[0] / model_only, 1),
            "workers": args.workers,
            "peak_mem_gb": peak_gb(),
        }
        report(r, args.out)
        results.append(r)
    return results


if __name__ == "__main__":
    main()
