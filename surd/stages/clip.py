"""The CLIP filter: keep a sample when CLIP prefers its simple prompt to its complex one.

For each image, softmax over CLIP's scaled logits for [simple, complex]; keep if
p_simple ≥ p_complex (the paper's rule; a tie keeps). Both probabilities and both raw cosine
similarities are stored, so another threshold needs no recomputation. Complex prompts longer
than CLIP's 77-token context are truncated by the tokenizer (as CLIP itself does) and flagged.
The model side (surd.models.clip_score: torch, open_clip) is imported when there is work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import Field

from storage.schemas import DROPPED, OK, STATUS_FIELDS
from surd.settings import StageParams
from surd.sources.safety import NSFW_SCORER
from surd.stages.base import Stage
from surd.stages.columns import ReleaseColumn

if TYPE_CHECKING:
    from surd.models.preprocess import Decoded

CLIP_SCORES = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("p_simple", pa.float32()),
        pa.field("p_complex", pa.float32()),
        pa.field("sim_simple", pa.float32()),
        pa.field("sim_complex", pa.float32()),
        pa.field("complex_truncated", pa.bool_()),
        pa.field("model_id", pa.string()),
        pa.field(
            "nsfw_score", pa.float32()
        ),  # CLIP zero-shot (surd.models.clip_score); null: scored before it
        # CLIP's unit-length image embedding, float16 (surd.stages.near_duplicates); null: before it
        pa.field("image_embedding", pa.list_(pa.float16())),
    ]
)


class ClipParams(StageParams):
    """How CLIP scores (`SURD_CLIP__*`)."""

    batch_size: int = Field(1024, ge=1, le=65536, description="images per model call (the benchmarked size)")
    gpu_decode: bool = Field(
        False,
        description="on a GPU: decode the stored JPEGs there (torchvision/nvJPEG; pixels differ slightly, "
        "benchmarks/gpu_check.py prints the keep decisions that flip)",
    )
    workers: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="decode processes beside the model; default: all cores but one beside a GPU, 0 on CPU",
    )


def keep(p_simple: float, p_complex: float) -> bool:
    return p_simple >= p_complex


class ClipStage(Stage["tuple[list[str], Decoded]"]):
    """Keeps a sample when CLIP prefers its simple prompt to its complex one."""

    name, schema = "clip_scores", CLIP_SCORES
    reads: ClassVar = {"images": ("image",), "captions": ("simple_prompt",), "raw_items": ("complex_prompt",)}
    pool, scale, label, command = "gpu", "partitions", "CLIP-kept", "clip-filter"
    Params, section = ClipParams, "clip"  # SURD_CLIP__*
    params: ClipParams
    release = (
        ReleaseColumn(
            "p_simple", pa.float32(), "CLIP's probability for the simple prompt (against the complex one)"
        ),
        ReleaseColumn("p_complex", pa.float32(), "CLIP's probability for the complex prompt"),
        ReleaseColumn(
            "nsfw_score",
            pa.float32(),
            "CLIP's zero-shot probability of the NSFW text over the safe one (not a trained detector)",
        ),
    )

    def start(self, stack: ExitStack) -> None:
        # the model side (torch, open_clip): imported only when there is work
        from surd.models import clip_score

        self.scorer, self.model_id, self.device, tokenizer = clip_score.load(self.settings)
        workers = clip_score.decode_workers(self.params.workers, self.device)
        self.threads(workers)
        pixels = not (self.params.gpu_decode and self.device.type == "cuda")  # else the GPU does
        pre = clip_score.Preprocessor(self.scorer.spec, workers, tokenizer=tokenizer, pixels=pixels)
        self.pre = stack.enter_context(pre)

    def provenance(self) -> dict[str, Any]:
        """With the zero-shot NSFW score's method and version (its model is `model_id`)."""
        return super().provenance() | {"nsfw_scorer": NSFW_SCORER}

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[tuple[list[str], Decoded]]:
        work = ((r["sample_id"], r["image"], (r["simple_prompt"], r["complex_prompt"])) for r in items)
        return self.pre.batches(work, self.params.batch_size)

    def decide(self, batch: tuple[list[str], Decoded]) -> list[dict[str, Any]]:
        ids, dec = batch
        assert dec.tokens is not None and dec.truncated is not None
        scores = self.scorer.score_tokens(dec.on(self.scorer.spec, self.device), dec.tokens)
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
