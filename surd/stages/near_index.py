"""Near-duplicate grouping of unit vectors (CLIP image embeddings), in storage order.

Each new vector is compared with every vector kept so far: a cosine similarity at or above the
threshold makes it a near duplicate of the closest kept one; otherwise it is kept and joins the
index. The first in storage order therefore always stays. Kept vectors from earlier runs are
loaded first, so a run decides exactly what one run over everything would have.

The search is faiss (inner product of unit vectors = cosine):
- up to `EXACT_MAX` vectors in all, an exact flat index (every pair compared; deterministic);
- beyond, an inverted-file index: k-means cells (`4·√N` of them, trained once on a seeded sample
  of up to 40 vectors a cell) and `NPROBE` cells searched per query, the vectors held as float16
  (what the table stores, so no precision is lost). A near duplicate sits next to its original,
  almost always in one of the few nearest cells; a miss keeps a duplicate, never drops an image.
Inside one batch the new vectors are also compared with each other, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

EXACT_MAX = 50_000  # vectors (kept + new) up to which the search is exact
NPROBE = 8  # cells an inverted-file search visits
TRAIN_PER_CELL = 40  # faiss asks for 39 or more training vectors a cell
SEED = 1234


@dataclass(frozen=True)
class Verdict:
    kept: bool
    of: str | None  # the kept sample this one duplicates
    similarity: float | None  # cosine to the closest kept vector (None: nothing kept yet)


def unit(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1)


class NearGrouper:
    """Decides batches of (id, vector) in order against everything kept before them."""

    def __init__(self, dim: int, threshold: float, expected: int, sample: np.ndarray | None = None) -> None:
        import faiss  # deferred: only a run with vectors to compare pays for it

        self.dim, self.threshold = dim, threshold
        self.ids: list[str] = []
        self.exact = expected <= EXACT_MAX
        if self.exact:
            self.index: Any = faiss.IndexFlatIP(dim)
            return
        cells = max(64, int(4 * math.sqrt(expected)))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, cells, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        self.index.cp.seed = SEED
        if sample is None or len(sample) < cells:
            raise ValueError(
                f"an inverted-file index of {cells} cells needs at least {cells} vectors to train"
            )
        rng = np.random.default_rng(SEED)
        take = min(len(sample), TRAIN_PER_CELL * cells)
        self.index.train(unit(sample[np.sort(rng.choice(len(sample), take, replace=False))]))
        self.index.nprobe = NPROBE
        self._quantizer = quantizer  # faiss does not own it from Python: keep it alive

    def __len__(self) -> int:
        return len(self.ids)

    def add_kept(self, ids: list[str], vectors: np.ndarray) -> None:
        """Vectors kept by earlier runs, in storage order."""
        if ids:
            self.index.add(unit(vectors))
            self.ids.extend(ids)

    def decide(self, ids: list[str], vectors: np.ndarray) -> list[Verdict]:
        """One batch, in order: each vector against the index and the batch's earlier kept ones."""
        if not ids:
            return []
        v = unit(vectors)
        best = np.full(len(ids), -np.inf, dtype=np.float32)
        of: list[str | None] = [None] * len(ids)
        if len(self.ids):
            sims, idx = self.index.search(v, 1)
            for i, (s, j) in enumerate(zip(sims[:, 0], idx[:, 0], strict=True)):
                if j >= 0:
                    best[i], of[i] = s, self.ids[j]
        inner = v @ v.T
        kept = np.zeros(len(ids), dtype=bool)
        out: list[Verdict] = []
        for i in range(len(ids)):
            earlier = np.flatnonzero(kept[:i])
            if len(earlier):
                j = earlier[np.argmax(inner[i, earlier])]
                if inner[i, j] > best[i]:
                    best[i], of[i] = inner[i, j], ids[j]
            sim = None if of[i] is None else round(float(best[i]), 6)
            if sim is not None and sim >= self.threshold:
                out.append(Verdict(False, of[i], sim))
            else:
                kept[i] = True
                out.append(Verdict(True, None, sim))
        if kept.any():
            self.index.add(v[kept])
            self.ids.extend(sid for sid, k in zip(ids, kept, strict=True) if k)
        return out
