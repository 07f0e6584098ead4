"""Reading per-layer embeddings: one layer's files only, never the others.

Layout (written by surd.embed): `<dir>/meta.json` and `<dir>/part-*/layer-NN.parquet`, each with
`sample_id`, `prompt_sha1` (of the simple prompt embedded) and a float16 `vector`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def meta(emb_dir: Path) -> dict:
    return json.loads((emb_dir / "meta.json").read_text())


def resolve_layer(emb_dir: Path, layer: int) -> int:
    layers = meta(emb_dir)["layers"]
    k = layers if layer == -1 else layer
    if not 1 <= k <= layers:
        raise ValueError(f"layer {layer} out of range 1..{layers} (or -1 for the last)")
    return k


def read_layer(
    emb_dir: Path, layer: int, wanted: dict[str, str] | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """{sample_id: float32 vector} of layer k (1..L, -1 = last). With `wanted` ({sample_id:
    prompt sha1}), only vectors of those prompts are kept (an edited prompt's old vector is not)."""
    k = resolve_layer(emb_dir, layer)
    out: dict[str, np.ndarray] = {}
    for part in sorted(p for p in emb_dir.iterdir() if p.is_dir() and p.name.startswith("part-")):
        t = pq.read_table(part / f"layer-{k:02d}.parquet")
        vecs = np.asarray(t.column("vector").combine_chunks().flatten()).reshape(t.num_rows, -1)
        ids, shas = t.column("sample_id").to_pylist(), t.column("prompt_sha1").to_pylist()
        for sid, sha, v in zip(ids, shas, vecs, strict=True):
            if wanted is None or wanted.get(sid) == sha:
                out[sid] = v.astype(np.float32)
    return out, k
