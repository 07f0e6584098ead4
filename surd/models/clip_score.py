"""CLIP's choice between a simple and a complex prompt for pixel batches (the CLIP stage's model
side: torch and open_clip); see surd.stages.clip."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from surd.models import profiles
from surd.models.device import device_for
from surd.models.preprocess import CLIP_MEAN, CLIP_STD, Preprocessor, Spec, decode_workers, normalize
from surd.settings import Settings
from surd.sources.safety import NSFW_SCORER, SAFETY_TEXTS

__all__ = ["NSFW_SCORER", "ClipScorer", "Preprocessor", "decode_workers", "load", "score"]


class ClipScorer:
    """CLIP's choice between [simple, complex] for each image, and its zero-shot NSFW score (the
    softmax over SAFETY_TEXTS, not a trained detector); load once, call per batch."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._safety: torch.Tensor | None = None  # SAFETY_TEXTS' features, computed once
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
        scale = self.model.logit_scale.exp().float()
        probs = (scale * sims).softmax(dim=-1)
        if self._safety is None:
            safety = self.tokenizer(list(SAFETY_TEXTS)).to(p.device)
            self._safety = self.model.encode_text(safety, normalize=True)
        nsfw = (scale * (img @ self._safety.T).float()).softmax(dim=-1)[:, 1]
        embedding = img.to(torch.float16).cpu().numpy()  # unit length: what near duplicates compare
        return [
            {
                "sim_simple": float(s[0]),
                "sim_complex": float(s[1]),
                "p_simple": float(pr[0]),
                "p_complex": float(pr[1]),
                "nsfw_score": float(z),
                "image_embedding": e,
            }
            for s, pr, z, e in zip(
                sims.cpu().tolist(), probs.cpu().tolist(), nsfw.cpu().tolist(), embedding, strict=True
            )
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


def load(settings: Settings) -> tuple[ClipScorer, str, torch.device, Any]:
    """The profile's CLIP on the settings' device (fp16 on a GPU), its id, the device, and its
    tokenizer."""
    device = device_for(settings.device)
    loaded = profiles.clip(settings)
    model = loaded.model.to(device, torch.float16 if device.type == "cuda" else torch.float32)
    return ClipScorer(model, loaded.extra), str(loaded.model_id), device, loaded.extra
