"""Inference: a diffusers StableDiffusionPipeline over the frozen parts, with the adapter applied
to the prompt embeddings (negative prompt embeddings stay the text encoder's own)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from adapter.data import encode_text
from adapter.model import SURAdapter


def sd_pipeline(parts: dict[str, Any]) -> Any:
    """A DDIM StableDiffusionPipeline built from the parts (no safety checker: evaluation only)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=DDIMScheduler.from_config(parts["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipe


@torch.no_grad()
def generate(
    pipe: Any,
    parts: dict[str, Any],
    prompt: str,
    seed: int,
    steps: int,
    adapter: SURAdapter | None = None,
    guidance: float = 7.5,
    negative_prompt: str = "",
) -> Image.Image:
    """One image; the same seed gives the same starting noise with and without the adapter."""
    dev = next(parts["unet"].parameters()).device
    dtype = next(parts["unet"].parameters()).dtype
    cond = encode_text(parts, [prompt])
    if adapter is not None:
        cond = adapter(cond)[0]
    uncond = encode_text(parts, [negative_prompt])
    res = parts.get("resolution", 512)
    out = pipe(
        prompt_embeds=cond.to(dev, dtype),
        negative_prompt_embeds=uncond.to(dev, dtype),
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=res,
        width=res,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pil",
    )
    return out.images[0]
