"""The CLIP filter: keep a sample when CLIP prefers its simple prompt to its complex one.

For each image, softmax over CLIP's scaled logits for [simple, complex]; keep if
p_simple ≥ p_complex (the paper's rule; a tie keeps). Both probabilities and both raw cosine
similarities are stored, so another threshold needs no recomputation. Complex prompts longer
than CLIP's 77-token context are truncated by the tokenizer (as CLIP itself does) and flagged.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from typing import Any

from PIL import Image

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.settings import Settings
from surd.stage import StageRun, batched, lookup, pending


def keep(p_simple: float, p_complex: float) -> bool:
    return p_simple >= p_complex


def is_truncated(tokenizer: Any, text: str) -> bool:
    """True when the prompt needs more than the context (start and end tokens included)."""
    context = getattr(tokenizer, "context_length", 77)
    return len(tokenizer.encode(text)) + 2 > context


def score(
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    images: list[Image.Image],
    simple: list[str],
    complex_: list[str],
) -> list[dict[str, float]]:
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        img = model.encode_image(torch.stack([preprocess(i) for i in images]).to(device), normalize=True)
        txt = model.encode_text(tokenizer([*simple, *complex_]).to(device), normalize=True)
        n = len(images)
        sims = torch.stack([(img * txt[:n]).sum(-1), (img * txt[n:]).sum(-1)], dim=-1)
        probs = (model.logit_scale.exp() * sims).softmax(dim=-1)
    return [
        {
            "sim_simple": float(s[0]),
            "sim_complex": float(s[1]),
            "p_simple": float(p[0]),
            "p_complex": float(p[1]),
        }
        for s, p in zip(sims.float().cpu(), probs.float().cpu(), strict=True)
    ]


def run_clip_filter(
    settings: Settings, data: DataDir, progress: Callable[[int], None] | None = None
) -> StageRun:
    from surd.models import profiles
    from surd.models.tiny import device_for

    captions, out = data.table("captions"), data.table("clip_scores")
    run = StageRun("clip_scores")
    todo = pending(captions, out, ["simple_prompt"])
    first = next(todo, None)
    if first is None:
        return run
    loaded = profiles.clip(settings)
    model = loaded.model.to(device_for(settings.device))
    for batch in batched(itertools.chain([first], todo), settings.part_size):
        ids = {r["sample_id"] for r in batch}
        imgs = lookup(data.table("images"), ids, ["image"])
        raw = lookup(data.table("raw_items"), ids, ["complex_prompt"])
        rows: list[dict[str, Any]] = []
        for sub in batched(batch, settings.clip.batch_size):
            pics = [Image.open(io.BytesIO(imgs[r["sample_id"]]["image"])).convert("RGB") for r in sub]
            simple = [r["simple_prompt"] for r in sub]
            complex_ = [raw[r["sample_id"]]["complex_prompt"] for r in sub]
            for r, c, s in zip(
                sub,
                complex_,
                score(model, loaded.processor, loaded.extra, pics, simple, complex_),
                strict=True,
            ):
                kept = keep(s["p_simple"], s["p_complex"])
                rows.append(
                    {
                        "sample_id": r["sample_id"],
                        "status": OK if kept else DROPPED,
                        "reason": None if kept else "clip_prefers_complex",
                        **s,
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
