"""The CLIP filter: keep a sample when CLIP prefers its simple prompt to its complex one.

For each image, softmax over CLIP's scaled logits for [simple, complex]; keep if
p_simple ≥ p_complex (the paper's rule; a tie keeps). Both probabilities and both raw cosine
similarities are stored, so another threshold needs no recomputation. Complex prompts longer
than CLIP's 77-token context are truncated by the tokenizer (as CLIP itself does) and flagged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.preprocess import CLIP_MEAN, CLIP_STD, Spec, batches, normalize
from surd.settings import Settings
from surd.stage import Partition, StageRun, batched, lookup, pending


def keep(p_simple: float, p_complex: float) -> bool:
    return p_simple >= p_complex


def is_truncated(tokenizer: Any, text: str) -> bool:
    """True when the prompt needs more than the context (start and end tokens included)."""
    context = getattr(tokenizer, "context_length", 77)
    return len(tokenizer.encode(text)) + 2 > context


class ClipScorer:
    """CLIP's choice between [simple, complex] for each image; load once, call per batch."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        cfg = getattr(model.visual, "preprocess_cfg", {})
        size = cfg.get("size", model.visual.image_size)
        self.spec = Spec(
            size=int(size[0] if isinstance(size, tuple | list) else size),
            mean=tuple(cfg.get("mean", CLIP_MEAN)),
            std=tuple(cfg.get("std", CLIP_STD)),
        )

    @torch.inference_mode()
    def score(self, pixels: torch.Tensor, simple: list[str], complex_: list[str]) -> list[dict[str, float]]:
        p = next(self.model.parameters())
        n = pixels.shape[0]
        img = self.model.encode_image(normalize(pixels, self.spec, p.device, p.dtype), normalize=True)
        txt = self.model.encode_text(self.tokenizer([*simple, *complex_]).to(p.device), normalize=True)
        sims = torch.stack([(img * txt[:n]).sum(-1), (img * txt[n:]).sum(-1)], dim=-1).float()
        probs = (self.model.logit_scale.exp().float() * sims).softmax(dim=-1)
        return [
            {
                "sim_simple": float(s[0]),
                "sim_complex": float(s[1]),
                "p_simple": float(pr[0]),
                "p_complex": float(pr[1]),
            }
            for s, pr in zip(sims.cpu(), probs.cpu(), strict=True)
        ]


def score(
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    images: list[Image.Image],
    simple: list[str],
    complex_: list[str],
) -> list[dict[str, float]]:
    """Scores of PIL images through open_clip's own preprocessing (the reference path)."""
    pixels = torch.stack([preprocess(i) for i in images])
    return ClipScorer(model, tokenizer).score(pixels, simple, complex_)


def run_clip_filter(
    settings: Settings,
    data: DataDir,
    progress: Callable[[int], None] | None = None,
    part: Partition = None,
) -> StageRun:
    from surd.models import profiles
    from surd.models.tiny import device_for

    captions, out = data.table("captions"), data.table("clip_scores")
    run = StageRun("clip_scores")
    todo = pending(captions, out, ["simple_prompt"], part)
    first = next(todo, None)
    if first is None:
        return run
    loaded = profiles.clip(settings)
    device = device_for(settings.device)
    scorer = ClipScorer(
        loaded.model.to(device, torch.float16 if device.type == "cuda" else torch.float32), loaded.extra
    )
    for batch in batched(itertools.chain([first], todo), settings.part_size):
        ids = {r["sample_id"] for r in batch}
        imgs = lookup(data.table("images"), ids, ["image"])
        raw = lookup(data.table("raw_items"), ids, ["complex_prompt"])
        simple = [r["simple_prompt"] for r in batch]
        complex_ = [raw[r["sample_id"]]["complex_prompt"] for r in batch]
        scores: list[dict[str, float]] = []
        step = settings.clip.batch_size
        blobs = [imgs[r["sample_id"]]["image"] for r in batch]
        for i, pixels in enumerate(batches(blobs, scorer.spec, step, settings.clip.workers)):
            sl = slice(i * step, i * step + pixels.shape[0])
            scores.extend(scorer.score(pixels, simple[sl], complex_[sl]))
        rows = []
        for r, c, sc in zip(batch, complex_, scores, strict=True):
            kept = keep(sc["p_simple"], sc["p_complex"])
            rows.append(
                {
                    "sample_id": r["sample_id"],
                    "status": OK if kept else DROPPED,
                    "reason": None if kept else "clip_prefers_complex",
                    **sc,
                    "complex_truncated": is_truncated(loaded.extra, c),
                    "model_id": loaded.model_id,
                }
            )
        out.write(
            rows,
            provenance={
                "stage": "clip_scores",
                "model_id": loaded.model_id,
                "settings": settings.provenance(),
            },
        )
        run.add(rows)
        if progress:
            progress(len(rows))
    return run
