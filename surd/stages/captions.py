"""The caption stage: BLIP's simple prompt for every kept image, in batches.

Generation follows LAVIS `blip_caption` / `base_coco`, the paper's captioner: the prompt
"a picture of " is fed to the decoder, beam search with 3 beams, at most 30 and at least 10
tokens in total (prompt included, as LAVIS counts them), and the prompt is stripped from the
stored caption. The search is LAVIS' own, transformers 4.26 beam scoring included (see
surd.models.blip_decode and `caption.search`). Images are decoded and preprocessed in worker processes
(surd.models.preprocess) while the model works; on a GPU the model runs in bf16. The model side
(surd.models.blip_caption: torch, transformers) is imported when there is work, so a run with
nothing to do costs no torch import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from storage.schemas import DROPPED, OK, STATUS_FIELDS
from surd.parallel import batched
from surd.stages.base import Stage
from surd.stages.captions_params import CaptionParams

if TYPE_CHECKING:
    from surd.models.caption_lavis import LavisCaptioner

CAPTIONS = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("simple_prompt", pa.string()),
        pa.field("model_id", pa.string()),
    ]
)


class CaptionStage(Stage[tuple[list[str], Any]]):
    """BLIP's simple prompt (a caption) for every image that went on."""

    name, reads, schema = "captions", {"images": ("image",)}, CAPTIONS
    pool, scale, label, command = "gpu", "partitions", "captioned", "caption"
    Params, section = CaptionParams, "caption"  # SURD_CAPTION__*
    params: CaptionParams

    def start(self, stack: ExitStack) -> None:
        # the model side (torch, transformers): imported only when there is work
        from surd.models import blip_caption

        cfg = self.params
        self.strip = blip_caption.strip_prompt
        if cfg.backend == "lavis":  # LAVIS in its own venv, a part at a time
            self.lavis: LavisCaptioner | None = blip_caption.LavisCaptioner(self.settings, cfg)
            self.model_id = self.lavis.model_id
            return
        self.lavis = None
        self.captioner, self.model_id, self.device = blip_caption.load(self.settings, cfg)
        workers = blip_caption.decode_workers(cfg.workers, self.device)
        self.threads(workers)
        pixels = not (cfg.gpu_decode and self.device.type == "cuda")  # else the GPU decodes them
        pre = blip_caption.Preprocessor(self.captioner.spec, workers, pixels=pixels)
        self.pre = stack.enter_context(pre)

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[tuple[list[str], Any]]:
        if self.lavis is not None:
            for batch in batched(items, self.settings.part_size):
                yield [r["sample_id"] for r in batch], [r["image"] for r in batch]
            return
        yield from self.pre.batches(((r["sample_id"], r["image"], ()) for r in items), self.params.batch_size)

    def decide(self, batch: tuple[list[str], Any]) -> list[dict[str, Any]]:
        ids, inputs = batch
        if self.lavis is not None:
            texts = [self.strip(t, self.params.prompt) for t in self.lavis.caption(inputs)]
        else:
            texts = self.captioner.caption(inputs.on(self.captioner.spec, self.device))
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
