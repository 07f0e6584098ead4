"""The caption stage: BLIP's simple prompt for every kept image, in batches."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from surd.settings import CaptionSettings, Settings
from surd.stage import StageRun, batched, pending


def strip_prompt(text: str, prompt: str) -> str:
    text = text.strip()
    head = prompt.strip().lower()
    if head and text.lower().startswith(head):
        text = text[len(head) :]
    return text.strip()


def caption_images(model: Any, processor: Any, images: list[Image.Image], cfg: CaptionSettings) -> list[str]:
    """Captions of a batch, prompt prefix stripped (LAVIS `blip_caption` does the same)."""
    import torch

    device = next(model.parameters()).device
    inputs = processor(images=images, text=[cfg.prompt.strip()] * len(images), return_tensors="pt")
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with torch.inference_mode():
        out = model.generate(
            **inputs, num_beams=cfg.num_beams, max_length=cfg.max_length, min_length=cfg.min_length
        )
    return [strip_prompt(t, cfg.prompt) for t in processor.batch_decode(out, skip_special_tokens=True)]


def run_captions(
    settings: Settings, data: DataDir, progress: Callable[[int], None] | None = None
) -> StageRun:
    from surd.models import profiles
    from surd.models.tiny import device_for

    images, out = data.table("images"), data.table("captions")
    run = StageRun("captions")
    todo = pending(images, out, ["image"])
    first = next(todo, None)
    if first is None:
        return run
    loaded = profiles.captioner(settings)  # once per worker, only when there is work
    model = loaded.model.to(device_for(settings.device))
    import itertools

    for batch in batched(itertools.chain([first], todo), settings.part_size):
        rows: list[dict[str, Any]] = []
        for sub in batched(batch, settings.caption.batch_size):
            pics = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in sub]
            for r, text in zip(
                sub, caption_images(model, loaded.processor, pics, settings.caption), strict=True
            ):
                rows.append(
                    {
                        "sample_id": r["sample_id"],
                        "status": OK if text else DROPPED,
                        "reason": None if text else "empty_caption",
                        "simple_prompt": text or None,
                        "model_id": loaded.model_id,
                    }
                )
        out.write(
            rows,
            provenance={"stage": "captions", "model_id": loaded.model_id, "settings": settings.provenance()},
        )
        run.add(rows)
        if progress:
            progress(len(rows))
    return run
