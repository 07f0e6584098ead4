"""A trained detector's NSFW score of every image that went on (surd.models.nsfw_detector: Yahoo's
open_nsfw). A score, not a filter: every sample goes on, and the review blurs, the filters and
sorts select, and the release labels by it. The model side (onnxruntime) loads only with work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from storage.schemas import OK, STATUS_FIELDS
from surd.parallel import batched
from surd.settings import StageParams
from surd.stages.base import Stage
from surd.stages.columns import ReleaseColumn

NSFW_SCORES = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("nsfw_detector", pa.float32()),  # P(NSFW), the trained detector's
        pa.field("model_id", pa.string()),
    ]
)


class NsfwParams(StageParams):
    """How the detector scores (`SURD_NSFW_SCORES__*`)."""

    batch_size: int = Field(
        16, ge=1, le=4096, description="images a session call (about 10 ms an image on 2 cores)"
    )


class NsfwStage(Stage[list[dict[str, Any]]]):
    """Scores each image with a trained NSFW detector (Yahoo's open_nsfw); every sample goes on."""

    name, schema, label, command = "nsfw_scores", NSFW_SCORES, "NSFW-scored", "nsfw-score"
    reads: ClassVar = {"images": ("image",)}
    # with the stages around it (CLIP before, near duplicates after) on the GPU hosts, so a deployed
    # rebuild hands them over in one run; onnxruntime uses their CPU cores
    pool = "gpu"
    Params = NsfwParams
    params: NsfwParams
    release = (
        ReleaseColumn(
            "nsfw_detector",
            pa.float32(),
            "a trained detector's NSFW probability (Yahoo's open_nsfw; `model_ids.nsfw_scores`)",
        ),
    )

    def start(self, stack: ExitStack) -> None:
        from surd.models.nsfw_detector import Detector  # onnxruntime: only with work

        self.detector = Detector(self.threads(0))
        stack.callback(self.detector.close)
        self.model_id = self.detector.model_id

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        return batched(items, self.params.batch_size)

    def decide(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        scores = self.detector.scores([r["image"] for r in batch])
        return [
            {
                "sample_id": r["sample_id"],
                "status": OK,
                "reason": None,
                "nsfw_detector": p,
                "model_id": self.model_id,
            }
            for r, p in zip(batch, scores, strict=True)
        ]
