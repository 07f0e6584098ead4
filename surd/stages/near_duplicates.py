"""Semantic near duplicates: the same picture cropped, re-encoded,
resized or re-posted on another site, which the byte and hash checks of the images stage miss.

Every CLIP-kept sample's image embedding (stored by the CLIP stage, float16, unit length) is
compared with every image kept before it, in storage order (surd.stages.near_index): at or above
the threshold (`near_duplicates.at`) it is dropped with the reason
`near_duplicate_of:<sample id>`, naming the kept image closest to it, and the first one stays.
Each row stores the cosine to the closest earlier kept image whatever the verdict, so another
threshold can be studied with `surd sql` without recomputing. A sample scored before embeddings
were stored has none: it is kept, with no similarity, and compared with nothing.

The default threshold depends on the profile, each measured (docs/benchmarks.md, "Near duplicates"):
`tiny`'s random CLIP puts distinct demo images as close as 0.9983, so only 0.999 is safe there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from storage.layout import DataDir
from storage.schemas import DROPPED, OK, STATUS_FIELDS, is_ok
from surd.parallel import batched
from surd.settings import StageParams
from surd.stages.base import Partition, Stage
from surd.stages.columns import ReleaseColumn

if TYPE_CHECKING:
    from surd.stages.near_index import NearGrouper

NEAR_DUPLICATES = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("similarity", pa.float32()),  # cosine to the closest kept image (null: none near)
        pa.field("near_duplicate_of", pa.string()),  # the kept sample it duplicates (dropped rows)
    ]
)
REASON = "near_duplicate_of"
DEFAULT_AT = {"tiny": 0.999, "real": 0.95}


class NearDuplicateParams(StageParams):
    """When two images are the same picture (`SURD_NEAR_DUPLICATES__*`)."""

    at: float | None = Field(
        None,
        gt=0,
        le=1,
        description="image cosine that makes a near duplicate; None: the profile's (docs: benchmarks)",
    )


def threshold(params: NearDuplicateParams, profile: str) -> float:
    return float(params.at if params.at is not None else DEFAULT_AT[profile])


def vectors(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a vector as a bool mask, those vectors as an (n, d) float16 array)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    has = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    present = col.filter(pa.array(has))
    if not len(present):
        return has, np.zeros((0, 0), dtype=np.float16)
    flat = np.asarray(present.flatten().to_numpy(zero_copy_only=False), dtype=np.float16)
    return has, flat.reshape(len(present), -1)


class NearDuplicateStage(Stage[list[dict[str, Any]]]):
    """Drops later images whose CLIP embedding is within the threshold of a kept one."""

    name, reads, schema = "near_duplicates", {"clip_scores": ("image_embedding",)}, NEAR_DUPLICATES
    pool, label = "gpu", "not a near duplicate"
    Params = NearDuplicateParams
    params: NearDuplicateParams
    release = (
        ReleaseColumn(
            "near_duplicates",
            pa.int32(),
            "how many later images were dropped as the same picture as this one (CLIP image cosine at or "
            "above the threshold; `near_duplicates` table)",
            derive=lambda data, ids: copies(data, ids),
        ),
    )

    def todo(self, part: Partition = None) -> Iterator[dict[str, Any]]:
        """The samples that went on and are not yet decided, in storage order, each with its
        embedding (a view into its part's array: no Python floats). Counted before the first is
        handed out, so `start` can size the index."""
        todo = self.pending_ids(part)
        scores = self.data.table("clip_scores")
        pending: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        for p in scores.parts() if len(todo) else []:  # keys first: a part with nothing new reads no vector
            t = scores.read_part(p, ["sample_id"])
            new = pc.is_in(t.column("sample_id"), value_set=todo)
            if pc.any(new).as_py():
                t = t.append_column("image_embedding", scores.read_part(p, ["image_embedding"]).column(0))
                t = t.filter(new)
                has, vecs = vectors(t.column("image_embedding"))
                pending.append((t.column("sample_id").to_pylist(), has, vecs))
        self.pending = pending
        for ids, has, vecs in pending:
            rows = iter(vecs)
            for sid, h in zip(ids, has, strict=True):
                yield {"sample_id": sid, "vector": next(rows) if h else None}

    def _kept(self) -> tuple[list[str], np.ndarray]:
        """The samples this stage kept in earlier runs that have an embedding, in storage order."""
        ids = kept(self.data)
        if not len(ids):
            return [], np.zeros((0, 0), dtype=np.float16)
        tables = self.data.table("clip_scores").select(ids, ["image_embedding"])
        found = {k: v for t in tables for k, v in _pairs(t) if v is not None}
        have = [i for i in ids.to_pylist() if i in found]
        return have, np.stack([found[i] for i in have]) if have else np.zeros((0, 0), dtype=np.float16)

    def start(self, stack: ExitStack) -> None:
        from surd.stages.near_index import EXACT_MAX, NearGrouper  # deferred: faiss, only with work

        kept_ids, kept = self._kept()
        new = [v for _, has, v in self.pending if len(v)]
        dims = {a.shape[1] for a in [kept, *new] if len(a)}
        if len(dims) > 1:
            raise ValueError(
                f"image embeddings of different sizes {sorted(dims)}: was the CLIP model changed?"
            )
        self.grouper: NearGrouper | None = None
        if dims:
            arrays = [a for a in [kept, *new] if len(a)]
            total = sum(len(a) for a in arrays)
            sample = np.concatenate(arrays) if total > EXACT_MAX else None  # to train the cells
            self.grouper = NearGrouper(
                dims.pop(), threshold(self.params, self.settings.profile), total, sample
            )
            self.grouper.add_kept(kept_ids, kept)
        self.pending = []

    def batches(self, items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        return batched(items, self.settings.part_size)

    def decide(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with_vec = [r for r in batch if r["vector"] is not None]
        verdicts: dict[str, Any] = {}
        if with_vec and self.grouper is not None:
            ids = [r["sample_id"] for r in with_vec]
            decided = self.grouper.decide(ids, np.stack([r["vector"] for r in with_vec]))
            verdicts = dict(zip(ids, decided, strict=True))
        rows = []
        for r in batch:
            v = verdicts.get(r["sample_id"])
            dropped = v is not None and not v.kept
            rows.append(
                {
                    "sample_id": r["sample_id"],
                    "status": DROPPED if dropped else OK,
                    "reason": f"{REASON}:{v.of}" if dropped and v is not None else None,
                    "similarity": None if v is None else v.similarity,
                    "near_duplicate_of": v.of if dropped and v is not None else None,
                }
            )
        return rows


def _pairs(t: pa.Table) -> Iterator[tuple[str, np.ndarray | None]]:
    has, vecs = vectors(t.column("image_embedding"))
    rows = iter(vecs)
    for sid, h in zip(t.column("sample_id").to_pylist(), has, strict=True):
        yield sid, (next(rows) if h else None)


def kept(data: DataDir) -> pa.Array:
    """The ids of the samples this stage kept (what goes on to review), in storage order."""
    rows = data.table("near_duplicates").read(["sample_id", "status"])
    return rows.filter(is_ok(rows)).column("sample_id").combine_chunks()


def _dropped_rows(data: DataDir) -> pa.Table:
    """(sample_id, near_duplicate_of) of every sample this stage dropped as a near duplicate."""
    rows = data.table("near_duplicates").read(["sample_id", "near_duplicate_of"])
    return rows.filter(pc.is_valid(rows.column("near_duplicate_of")))


def dropped(data: DataDir) -> pa.Array:
    """The ids of the samples dropped as near duplicates (a release holds none of them back in)."""
    return _dropped_rows(data).column("sample_id").combine_chunks()


def copies(data: DataDir, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    """For each of `ids`, how many later images were dropped as its near duplicates (int32)."""
    of = _dropped_rows(data).column("near_duplicate_of")
    if not len(of):
        return pa.array([0] * len(ids), pa.int32())
    counts = pc.value_counts(of)
    keys, n = counts.field("values"), counts.field("counts")
    flat = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pc.fill_null(pc.take(n, pc.index_in(flat, value_set=keys)), 0).cast(pa.int32())
