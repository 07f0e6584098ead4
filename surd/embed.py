"""Per-layer LLM embeddings of every simple prompt of a release.

Layer k (1…L) is the output of decoder block k before the final norm, taken with a forward hook
on each block as it runs; the mean is over the prompt's real tokens only (padding masked).
Stored as float16, one Parquet file per layer inside each part folder, so a reader takes one
layer without reading the others:

    <root>/embeddings/<llm slug>/meta.json
    <root>/embeddings/<llm slug>/part-<ns>-<id>/layer-01.parquet … layer-LL.parquet

A part folder is assembled under a temp name and renamed whole. A prompt is embedded again when
its simple prompt changed (keyed by sample id and the prompt's sha1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.schemas import embedding_schema
from storage.tables import atomic_write_bytes, fault_point, write_parquet_atomic
from surd.ids import sha1_text
from surd.llm_pool import LayerPooler, PooledBatch, decoder_layers
from surd.settings import Settings
from surd.stage import Partition, in_partition


def slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)


def pooled_layers(model: Any, tokenizer: Any, prompts: list[str]) -> np.ndarray:
    """(B, L, H) float32: masked mean over tokens of each decoder block's output, on a padded
    batch. The reference for the fast path (surd.llm_pool), and usable with any padding side."""
    import torch

    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"].to(device)
    denom = mask.sum(1, keepdim=True).clamp(min=1).float()
    pooled: list[torch.Tensor] = []

    def hook(_module: Any, _inp: Any, out: Any) -> None:
        h = out[0] if isinstance(out, tuple) else out
        pooled.append(((h.float() * mask[..., None]).sum(1) / denom).cpu())

    handles = [layer.register_forward_hook(hook) for layer in decoder_layers(model)]
    try:
        with torch.inference_mode():
            base = getattr(model, "model", model)
            base(input_ids=enc["input_ids"].to(device), attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(pooled, dim=1).numpy()


class EmbeddingStore:
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
        from storage.embeddings import read_layer

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
                    },
                    indent=1,
                ).encode(),
            )
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        schema = embedding_schema(hidden)
        half = vectors.astype(np.float16)
        for k in range(n_layers):
            flat = pa.array(half[:, k, :].reshape(-1), type=pa.float16())
            col = pa.FixedSizeListArray.from_arrays(flat, hidden)
            table = pa.Table.from_arrays([pa.array(ids), pa.array(shas), col], schema=schema)
            write_parquet_atomic(table, tmp / f"layer-{k + 1:02d}.parquet", compression="none")
        final = self.dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        fault_point("embeddings_tmp", 1)  # a kill here leaves only an ignored temp folder
        os.replace(tmp, final)
        self._written += 1
        fault_point("embeddings", self._written)
        return final


def run_embed(
    settings: Settings,
    data: DataDir,
    release: Path,
    llm: str | None = None,
    progress: Callable[[int], None] | None = None,
    part: Partition = None,
) -> tuple[int, str]:
    """Embed every simple prompt of `release` not yet embedded for this LLM (only partition `part`
    of them, when given). Returns (n, model id).

    With `embed.workers` > 1 the prompts are split into that many slices, each embedded by its
    own process on its own device (`cuda:<rank>` on a GPU machine: one worker per GPU); each
    worker writes its own parts, so a killed worker loses nothing the others wrote."""
    from surd.models import profiles

    model_id = profiles.llm_model_id(settings, llm)
    store = EmbeddingStore(data, model_id)
    for stale in store.dir.glob(".tmp-*") if store.dir.exists() else []:
        shutil.rmtree(stale)
    todo = embed_todo(store, release, part)
    if not todo:
        return 0, model_id
    workers = min(settings.embed.workers, len(todo))
    if workers <= 1:
        return embed_slice(settings, data, llm, todo, None, progress), model_id
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    procs = [
        ctx.Process(target=embed_slice, args=(settings, data, llm, todo[r::workers], r))
        for r in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [r for r, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"embedding workers {failed} failed; rerun to finish (finished parts are kept)")
    return len(todo), model_id


def embed_todo(store: EmbeddingStore, release: Path, part: Partition = None) -> list[tuple[str, str, str]]:
    """(sample id, prompt, sha1) of the release's simple prompts not yet in `store`, by id."""
    shards = sorted(release.glob("shard-*.parquet"))
    table = pa.concat_tables([pq.read_table(s, columns=["sample_id", "simple_prompt"]) for s in shards])
    prompts = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    have = store.keys()
    return [
        (sid, p, sha1_text(p))
        for sid, p in sorted(prompts.items())
        if (sid, sha1_text(p)) not in have and in_partition(sid, part)
    ]


def embed_slice(
    settings: Settings,
    data: DataDir,
    llm: str | None,
    todo: list[tuple[str, str, str]],
    rank: int | None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed (sample id, prompt, sha1) triples on one device: `rank` picks `cuda:<rank>` on GPU."""
    import torch

    from surd.models import profiles
    from surd.models.tiny import device_for

    loaded = profiles.llm(settings, llm)
    store = EmbeddingStore(data, profiles.llm_model_id(settings, llm))
    device = device_for(settings.device)
    if device.type == "cuda" and rank is not None:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    dtype = _dtype(settings.embed.dtype, device)
    model = loaded.model if loaded.split else loaded.model.to(device=device, dtype=dtype)
    store.revision = loaded.revision
    ids = loaded.processor([t[1] for t in todo])["input_ids"]
    pooler = LayerPooler(model, compile_blocks=settings.embed.compile_blocks and device.type == "cuda")

    def flush(batches: list[PooledBatch]) -> int:
        order = [i for b in batches for i in b.indices]
        vectors = np.concatenate([b.numpy() for b in batches])
        step = settings.part_size  # parts stay small whatever the batch size: the unit of resume
        for k in range(0, len(order), step):
            part = order[k : k + step]
            store.write_part([todo[i][0] for i in part], [todo[i][2] for i in part], vectors[k : k + step])
            if progress:
                progress(len(part))
        return len(order)

    try:
        with ThreadPoolExecutor(max_workers=1) as writer:  # disk never stalls the GPU
            futures = []
            pending: list[PooledBatch] = []
            for batch in pooler.run(ids, settings.embed.batch_tokens):
                pending.append(batch)
                if sum(len(b.indices) for b in pending) >= settings.part_size:
                    futures.append(writer.submit(flush, pending))
                    pending = []
            if pending:
                futures.append(writer.submit(flush, pending))
            return sum(f.result() for f in futures)
    finally:
        pooler.close()


def _dtype(name: str, device: Any) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
