"""The caption stage: BLIP's simple prompt for every kept image, in batches.

Generation follows LAVIS `blip_caption` / `base_coco`, the paper's captioner: the prompt
"a picture of " is fed to the decoder, beam search with 3 beams, at most 30 and at least 10
tokens in total (prompt included, as LAVIS counts them), and the prompt is stripped from the
stored caption. The search is LAVIS' own, transformers 4.26 beam scoring included (see
surd.models.blip_decode and `caption.search`). Images are decoded and preprocessed in worker processes
(surd.models.preprocess) while the model works; on a GPU the model runs in bf16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import torch
from PIL import Image

from storage.schemas import DROPPED, OK
from surd.models import profiles
from surd.models.blip_decode import BlipDecoder, supports
from surd.models.caption_lavis import LavisCaptioner
from surd.models.device import device_for
from surd.models.preprocess import Preprocessor, Spec, decode_workers, normalize
from surd.parallel import batched
from surd.settings import CaptionSettings
from surd.stages.base import Stage


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

    def __init__(self, model: Any, processor: Any, cfg: CaptionSettings) -> None:
        self.model, self.processor, self.cfg = model, processor, cfg
        ip = processor.image_processor
        self.spec = Spec(size=int(ip.size["height"]), mean=tuple(ip.image_mean), std=tuple(ip.image_std))
        enc = processor.tokenizer([cfg.prompt.strip()], return_tensors="pt")
        self.prompt_ids, self.prompt_mask = enc["input_ids"], enc["attention_mask"]
        self.fast: BlipDecoder | None = None
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


def caption_images(model: Any, processor: Any, images: list[Image.Image], cfg: CaptionSettings) -> list[str]:
    """Captions of PIL images through the model's own processor (the reference path)."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return BlipCaptioner(model, processor, cfg).caption(pixels)


class CaptionStage(Stage[tuple[list[str], Any]]):
    """BLIP's simple prompt for every kept image (images → captions)."""

    name, source, columns = "captions", "images", ("image",)

    def start(self, stack: ExitStack) -> None:
        cfg = self.settings.caption
        if cfg.backend == "lavis":  # LAVIS in its own venv, a part at a time
            self.lavis: LavisCaptioner | None = LavisCaptioner(self.settings)
            self.model_id = self.lavis.model_id
            return
        self.lavis = None
        device = device_for(self.settings.device)
        loaded = profiles.captioner(self.settings)
        model = loaded.model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
        self.captioner = BlipCaptioner(model, loaded.processor, cfg)
        self.model_id = str(loaded.model_id)
        workers = decode_workers(cfg.workers, device)
        self.threads(workers)
        self.pre = stack.enter_context(Preprocessor(self.captioner.spec, workers))

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[tuple[list[str], Any]]:
        if self.lavis is not None:
            for batch in batched(items, self.settings.part_size):
                yield [r["sample_id"] for r in batch], [r["image"] for r in batch]
            return
        yield from self.pre.batches(
            ((r["sample_id"], r["image"], ()) for r in items), self.settings.caption.batch_size
        )

    def decide(self, batch: tuple[list[str], Any]) -> list[dict[str, Any]]:
        ids, inputs = batch
        if self.lavis is not None:
            texts = [strip_prompt(t, self.settings.caption.prompt) for t in self.lavis.caption(inputs)]
        else:
            texts = self.captioner.caption(inputs.pixels)
        return [
            {
                "sample_id": sid,
                "status": OK if text else DROPPED,
                "reason": None if text else "empty_caption",
                "simple_prompt": text or None,
                "model_id": self.model_id,
            }
            for sid, text in zip(ids, texts, strict=True)
        ]
