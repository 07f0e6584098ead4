"""The CLIP filter: keep a sample when CLIP prefers its simple prompt to its complex one.

For each image, softmax over CLIP's scaled logits for [simple, complex]; keep if
p_simple ≥ p_complex (the paper's rule; a tie keeps). Both probabilities and both raw cosine
similarities are stored, so another threshold needs no recomputation. Complex prompts longer
than CLIP's 77-token context are truncated by the tokenizer (as CLIP itself does) and flagged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import torch
from PIL import Image

from storage.schemas import DROPPED, OK
from surd.models import profiles
from surd.models.device import device_for
from surd.models.preprocess import CLIP_MEAN, CLIP_STD, Decoded, Preprocessor, Spec, decode_workers, normalize
from surd.stages.base import Partition, Stage


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


class ClipStage(Stage[tuple[list[str], Decoded]]):
    """CLIP's choice between each image's simple and complex prompt (captions → clip_scores)."""

    name, source, columns = "clip_scores", "captions", ("simple_prompt",)

    def todo(self, part: Partition = None) -> Iterator[dict[str, Any]]:
        simple = {r["sample_id"]: r["simple_prompt"] for r in super().todo(part)}
        if not simple:
            return
        complex_ = self.data.table("raw_items").lookup(set(simple), ["complex_prompt"])
        # one pass over the stored images, reading only the parts that hold pending ones
        for r in self.data.table("images").iter_lookup(simple, ["image"]):
            sid = r["sample_id"]
            yield {**r, "prompts": (simple[sid], complex_[sid]["complex_prompt"])}

    def start(self, stack: ExitStack) -> None:
        device = device_for(self.settings.device)
        loaded = profiles.clip(self.settings)
        model = loaded.model.to(device, torch.float16 if device.type == "cuda" else torch.float32)
        self.scorer = ClipScorer(model, loaded.extra)
        self.model_id = loaded.model_id
        workers = decode_workers(self.settings.clip.workers, device)
        self.threads(workers)
        self.pre = stack.enter_context(Preprocessor(self.scorer.spec, workers, tokenizer=loaded.extra))

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[tuple[list[str], Decoded]]:
        work = ((r["sample_id"], r["image"], r["prompts"]) for r in items)
        return self.pre.batches(work, self.settings.clip.batch_size)

    def decide(self, batch: tuple[list[str], Decoded]) -> list[dict[str, Any]]:
        ids, dec = batch
        assert dec.tokens is not None and dec.truncated is not None
        scores = self.scorer.score_tokens(dec.pixels, dec.tokens)
        rows = []
        for sid, sc, trunc in zip(ids, scores, dec.truncated[:, 1].tolist(), strict=True):
            kept = keep(sc["p_simple"], sc["p_complex"])
            rows.append(
                {
                    "sample_id": sid,
                    "status": OK if kept else DROPPED,
                    "reason": None if kept else "clip_prefers_complex",
                    **sc,
                    "complex_truncated": bool(trunc),
                    "model_id": self.model_id,
                }
            )
        return rows
