"""BLIP captioning of pixel batches (the caption stage's model side: torch and transformers).

Generation follows LAVIS `blip_caption` / `base_coco`; see surd.stages.captions."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from surd.models import profiles
from surd.models.blip_decode import BlipDecoder, supports
from surd.models.caption_lavis import LavisCaptioner
from surd.models.device import device_for
from surd.models.preprocess import Preprocessor, Spec, decode_workers, normalize
from surd.settings import Settings
from surd.stages.captions_params import CaptionParams

__all__ = ["BlipCaptioner", "LavisCaptioner", "Preprocessor", "caption_images", "decode_workers", "load"]


def strip_prompt(text: str, prompt: str) -> str:
    text = text.strip()
    head = prompt.strip().lower()
    if head and text.lower().startswith(head):
        text = text[len(head) :]
    return text.strip()


class BlipCaptioner:
    """BLIP captioning of preprocessed pixel batches; load once, call per batch.

    The search runs in `surd.models.blip_decode` (each image's cross-attention computed once for all its
    beams), scoring hypotheses as LAVIS' transformers 4.26 did (`caption.search = "lavis"`, the
    default: the paper's captions) or as transformers 5 does (`"transformers"`); each is checked
    token for token against the library it follows. `"generate"` calls transformers' `generate`.
    """

    def __init__(self, model: Any, processor: Any, cfg: CaptionParams) -> None:
        self.model, self.processor, self.cfg = model, processor, cfg
        ip = processor.image_processor
        self.spec = Spec(size=int(ip.size["height"]), mean=tuple(ip.image_mean), std=tuple(ip.image_std))
        enc = processor.tokenizer([cfg.prompt.strip()], return_tensors="pt")
        self.prompt_ids, self.prompt_mask = enc["input_ids"], enc["attention_mask"]
        self.fast: BlipDecoder | None = None
        if cfg.vision_attention == "sdpa":
            from surd.models.blip_vision import use_sdpa  # an option, off by default: loaded when asked

            use_sdpa(model)
        if cfg.search != "generate":
            why = supports(model)
            if why is not None:
                raise ValueError(
                    f"caption.search={cfg.search} can't reproduce this model's search ({why}): use 'generate'"
                )
            self.fast = BlipDecoder(model, cfg.num_beams, cfg.max_length, cfg.min_length, search=cfg.search)

    @torch.inference_mode()
    def caption(self, pixels: torch.Tensor) -> list[str]:
        p = next(self.model.parameters())
        n = pixels.shape[0]
        px = normalize(pixels, self.spec, p.device, p.dtype)
        if self.fast is not None:
            out = self.fast.generate(px, self.prompt_ids[0])
        else:
            out = self.model.generate(
                pixel_values=px,
                input_ids=self.prompt_ids.to(p.device).repeat(n, 1),  # generate() writes into it
                attention_mask=self.prompt_mask.to(p.device).repeat(n, 1),
                num_beams=self.cfg.num_beams,
                max_length=self.cfg.max_length,
                min_length=self.cfg.min_length,
            )
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [strip_prompt(t, self.cfg.prompt) for t in texts]


def caption_images(model: Any, processor: Any, images: list[Image.Image], cfg: CaptionParams) -> list[str]:
    """Captions of PIL images through the model's own processor (the reference path)."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return BlipCaptioner(model, processor, cfg).caption(pixels)


def load(settings: Settings, cfg: CaptionParams) -> tuple[BlipCaptioner, str, torch.device]:
    """The profile's BLIP on the settings' device (bf16 on a GPU) captioning as `cfg` says, its id,
    and the device."""
    device = device_for(settings.device)
    loaded = profiles.captioner(settings)
    model = loaded.model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    return BlipCaptioner(model, loaded.processor, cfg), str(loaded.model_id), device
