"""Per-layer embedding sets, both directions: written a part at a time, read one layer's files
only, never the others.

Layout: `<root>/embeddings/<llm slug>/meta.json` and `<…>/part-<ns>-<id>/layer-NN.parquet`, each with
`sample_id`, `prompt_sha1` (of the simple prompt embedded) and a float16 `vector`. A part folder
is assembled under a temp name and renamed whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.provenance import code_identity
from storage.schemas import embedding_schema
from storage.tables import atomic_write_bytes, fault_point, write_parquet_atomic

KEYS = ["sample_id", "prompt_sha1"]  # the columns that keep Parquet's dictionary and statistics
WRITE_THREADS = 8  # layers written at once


def slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)


def prompt_sha1(text: str | None) -> str:
    """The key of an embedded prompt beside its sample id: a changed prompt is embedded again."""
    return hashlib.sha1((text or "").encode()).hexdigest()


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


class EmbeddingStore:
    """One LLM's embedding set in a data root: written a part at a time, read a layer at a time."""

    def __init__(self, data: DataDir, model_id: str) -> None:
        self.dir = data.embeddings_dir / slug(model_id)
        self.model_id = model_id
        self.revision: str | None = None
        self._written = 0

    def meta(self) -> dict[str, Any]:
        path = self.dir / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def parts(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("part-"))

    def keys(self) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for part in self.parts():
            t = pq.read_table(part / "layer-01.parquet", columns=["sample_id", "prompt_sha1"])
            out.update(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True))
        return out

    def read_layer(self, layer: int) -> tuple[dict[str, Any], int]:
        """One layer of every embedded prompt; the other layers' files are never opened."""
        return read_layer(self.dir, layer)

    def write_part(self, ids: list[str], shas: list[str], vectors: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        n_layers, hidden = vectors.shape[1], vectors.shape[2]
        if not (self.dir / "meta.json").exists():
            atomic_write_bytes(
                self.dir / "meta.json",
                json.dumps(
                    {
                        "model_id": self.model_id,
                        "revision": self.revision,
                        "layers": n_layers,
                        "hidden_size": hidden,
                        "dtype": "float16",
                        "pooling": "masked mean of decoder block outputs, before final norm",
                        "layer_numbering": "1..L = output of decoder block k",
                        "code": code_identity(),
                    },
                    indent=1,
                ).encode(),
            )
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        schema = embedding_schema(hidden)
        half = vectors.astype(np.float16)
        keys = [pa.array(ids), pa.array(shas)]

        def layer(k: int) -> None:
            flat = pa.array(half[:, k, :].reshape(-1), type=pa.float16())
            col = pa.FixedSizeListArray.from_arrays(flat, hidden)
            table = pa.Table.from_arrays([*keys, col], schema=schema)
            # no dictionary and no min/max for the vectors: neither helps a random float16, and
            # together they took 85% of the write (7x slower); the layers go in parallel (Arrow
            # releases the GIL while it encodes and writes)
            write_parquet_atomic(
                table,
                tmp / f"layer-{k + 1:02d}.parquet",
                compression="none",
                use_dictionary=KEYS,
                write_statistics=KEYS,
            )

        with ThreadPoolExecutor(max(1, min(WRITE_THREADS, os.cpu_count() or 1))) as pool:
            list(pool.map(layer, range(n_layers)))
        final = self.dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        fault_point("embeddings_tmp", 1)  # a kill here leaves only an ignored temp folder
        os.replace(tmp, final)
        self._written += 1
        fault_point("embeddings", self._written)
        return final
