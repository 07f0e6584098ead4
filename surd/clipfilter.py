"""The CLIP filter: keep a sample when CLIP prefers its simple prompt to its complex one.

For each image, softmax over CLIP's scaled logits for [simple, complex]; keep if
p_simple ≥ p_complex (the paper's rule; a tie keeps). Both probabilities and both raw cosine
similarities are stored, so another threshold needs no recomputation. Complex prompts longer
than CLIP's 77-token context are truncated by the tokenizer (as CLIP itself does) and flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.preprocess import CLIP_MEAN, CLIP_STD, Preprocessor, Spec, decode_workers, normalize
from surd.settings import Settings
from surd.stage import Partition, PartWriter, StageRun, pending


def keep(p_simple: float, p_complex: float) -> bool:
    return p_simple >= p_complex


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

    def score(self, pixels: torch.Tensor, simple: list[str], complex_: list[str]) -> list[dict[str, float]]:
        tokens = self.tokenizer([*simple, *complex_]).view(2, len(simple), -1).transpose(0, 1)
        return self.score_tokens(pixels, tokens)

    @torch.inference_mode()
    def score_tokens(self, pixels: torch.Tensor, tokens: torch.Tensor) -> list[dict[str, float]]:
        """pixels (n, 3, s, s); tokens (n, 2, context): [simple, complex] per image."""
        p = next(self.model.parameters())
        n = pixels.shape[0]
        img = self.model.encode_image(normalize(pixels, self.spec, p.device, p.dtype), normalize=True)
        flat = tokens.transpose(0, 1).reshape(2 * n, -1)  # all simple prompts, then all complex ones
        txt = self.model.encode_text(flat.to(p.device, non_blocking=True), normalize=True)
        sims = torch.stack([(img * txt[:n]).sum(-1), (img * txt[n:]).sum(-1)], dim=-1).float()
        probs = (self.model.logit_scale.exp().float() * sims).softmax(dim=-1)
        return [
            {
                "sim_simple": float(s[0]),
                "sim_complex": float(s[1]),
                "p_simple": float(pr[0]),
                "p_complex": float(pr[1]),
            }
            for s, pr in zip(sims.cpu().tolist(), probs.cpu().tolist(), strict=True)
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

    out = data.table("clip_scores")
    run = StageRun("clip_scores")
    simple = {
        r["sample_id"]: r["simple_prompt"]
        for r in pending(data.table("captions"), out, ["simple_prompt"], part)
    }
    if not simple:
        return run
    complex_ = data.table("raw_items").lookup(set(simple), ["complex_prompt"])
    device = device_for(settings.device)
    workers = decode_workers(settings.clip.workers, device)
    loaded = profiles.clip(settings)
    scorer = ClipScorer(
        loaded.model.to(device, torch.float16 if device.type == "cuda" else torch.float32), loaded.extra
    )
    items = (  # one pass over the stored images, reading only the parts that hold pending ones
        (r["sample_id"], r["image"], (simple[r["sample_id"]], complex_[r["sample_id"]]["complex_prompt"]))
        for r in data.table("images").iter_lookup(simple, ["image"])
    )
    writer = PartWriter(
        out,
        settings.part_size,
        run,
        progress,
        {"stage": "clip_scores", "model_id": loaded.model_id, "settings": settings.provenance()},
    )
    with Preprocessor(scorer.spec, workers, tokenizer=loaded.extra) as pre:
        for ids, dec in pre.batches(items, settings.clip.batch_size):
            assert dec.tokens is not None and dec.truncated is not None
            rows = []
            for sid, sc, trunc in zip(
                ids, scorer.score_tokens(dec.pixels, dec.tokens), dec.truncated[:, 1].tolist(), strict=True
            ):
                kept = keep(sc["p_simple"], sc["p_complex"])
                rows.append(
                    {
                        "sample_id": sid,
                        "status": OK if kept else DROPPED,
                        "reason": None if kept else "clip_prefers_complex",
                        **sc,
                        "complex_truncated": bool(trunc),
                        "model_id": loaded.model_id,
                    }
                )
            writer.add(rows)
    writer.close()
    return run
