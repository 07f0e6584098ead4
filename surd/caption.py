"""The caption stage: BLIP's simple prompt for every kept image, in batches.

Generation follows LAVIS `blip_caption` / `base_coco`, the paper's captioner: the prompt
"a picture of " is fed to the decoder, beam search with 3 beams, at most 30 and at least 10
tokens in total (prompt included, as LAVIS counts them), and the prompt is stripped from the
stored caption. The search is LAVIS' own, transformers 4.26 beam scoring included (see
surd.blip_decode and `caption.search`). Images are decoded and preprocessed in worker processes
(surd.preprocess) while the model works; on a GPU the model runs in bf16.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from storage.layout import DataDir
from storage.schemas import DROPPED, OK
from storage.tables import PartTable
from surd.blip_decode import BlipDecoder, supports
from surd.preprocess import Preprocessor, Spec, decode_workers, normalize
from surd.settings import CaptionSettings, Settings
from surd.stage import Partition, PartWriter, StageRun, batched, pending


def strip_prompt(text: str, prompt: str) -> str:
    text = text.strip()
    head = prompt.strip().lower()
    if head and text.lower().startswith(head):
        text = text[len(head) :]
    return text.strip()


class BlipCaptioner:
    """BLIP captioning of preprocessed pixel batches; load once, call per batch.

    The search runs in `surd.blip_decode` (each image's cross-attention computed once for all its
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


def _rows(ids: list[str], texts: list[str], model_id: str) -> list[dict[str, Any]]:
    return [
        {
            "sample_id": sid,
            "status": OK if text else DROPPED,
            "reason": None if text else "empty_caption",
            "simple_prompt": text or None,
            "model_id": model_id,
        }
        for sid, text in zip(ids, texts, strict=True)
    ]


def run_captions(
    settings: Settings,
    data: DataDir,
    progress: Callable[[int], None] | None = None,
    part: Partition = None,
) -> StageRun:
    images, out = data.table("images"), data.table("captions")
    run = StageRun("captions")
    todo = pending(images, out, ["image"], part)
    first = next(todo, None)
    if first is None:
        return run
    rows = itertools.chain([first], todo)
    cfg = settings.caption
    if cfg.backend == "lavis":  # LAVIS in its own venv, a part at a time
        from surd.caption_lavis import LavisCaptioner

        lavis = LavisCaptioner(settings)
        writer = _writer(settings, out, run, progress, lavis.model_id)
        for batch in batched(rows, settings.part_size):
            texts = [strip_prompt(t, cfg.prompt) for t in lavis.caption([r["image"] for r in batch])]
            writer.add(_rows([r["sample_id"] for r in batch], texts, lavis.model_id))
        writer.close()
        return run

    from surd.models import profiles
    from surd.models.tiny import device_for

    device = device_for(settings.device)
    workers = decode_workers(cfg.workers, device)
    loaded = profiles.captioner(settings)  # once per worker, only when there is work
    model = loaded.model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    captioner = BlipCaptioner(model, loaded.processor, cfg)
    model_id = str(loaded.model_id)
    writer = _writer(settings, out, run, progress, model_id)
    with Preprocessor(captioner.spec, workers) as pre:
        for ids, dec in pre.batches(((r["sample_id"], r["image"], ()) for r in rows), cfg.batch_size):
            writer.add(_rows(ids, captioner.caption(dec.pixels), model_id))
    writer.close()
    return run


def _writer(
    settings: Settings, out: PartTable, run: StageRun, progress: Callable[[int], None] | None, model_id: str
) -> PartWriter:
    provenance = {"stage": "captions", "model_id": model_id, "settings": settings.provenance()}
    return PartWriter(out, settings.part_size, run, progress, provenance)
