"""Per-layer LLM embeddings of every simple prompt of a release (release → embeddings).

Layer k (1…L) is the output of decoder block k before the final norm, taken with a forward hook
on each block as it runs (surd.models.llm_pool); the mean is over the prompt's real tokens only.
Stored as float16 by storage.embeddings, one Parquet file per layer inside each part folder. A
prompt is embedded again when its simple prompt changed (keyed by sample id and the prompt's sha1).
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from storage.embeddings import EmbeddingStore, prompt_sha1
from storage.layout import DataDir
from storage.releases import read_columns
from storage.schemas import OK
from surd.models import profiles
from surd.models.device import device_for
from surd.models.llm_pool import LayerPooler, PooledBatch
from surd.parallel import batched
from surd.settings import Settings
from surd.stages.base import Partition, Rows, Stage, not_done, run_stage

Todo = tuple[str, str, str]  # (sample id, simple prompt, its sha1)
TOKENIZE_CHUNK = 8_192  # prompts tokenised at once: memory stays that of one chunk, whatever the release


def embed_todo(store: EmbeddingStore, release: Path, part: Partition = None) -> list[Todo]:
    """(sample id, prompt, sha1) of the release's simple prompts not yet in `store`, by id."""
    table: pa.Table = read_columns(release, ["sample_id", "simple_prompt"])
    prompts = dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))
    candidates = [(sid, p, prompt_sha1(p)) for sid, p in sorted(prompts.items())]
    return list(not_done(candidates, store.keys(), lambda t: (t[0], t[2]), lambda t: t[0], part))


class EmbedStage(Stage[PooledBatch]):
    """Every layer's pooled state of the simple prompts in `todo` (or the release's not yet
    embedded), on one device: `rank` picks `cuda:<rank>` on a GPU machine."""

    name = "embeddings"
    drops_takedowns = False  # it embeds a release's rows: a release holds no taken-down item

    def __init__(
        self,
        settings: Settings,
        data: DataDir,
        release: Path | None,
        llm: str | None = None,
        todo: list[Todo] | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(settings, data)
        self.release_dir, self.llm, self.given, self.rank = release, llm, todo, rank
        self.store = EmbeddingStore(data, profiles.llm_model_id(settings, llm))
        self.model_id = self.store.model_id

    @property
    def lock(self) -> str:
        return f"embeddings-{self.store.dir.name}"

    def prepare(self) -> None:
        """Its output is the embedding set (`self.store`), not a table."""

    def todo(self, part: Partition = None) -> Iterator[Todo]:
        if self.given is not None:
            return iter(self.given)
        for stale in self.store.dir.glob(".tmp-*") if self.store.dir.exists() else []:
            shutil.rmtree(stale)  # a killed writer's half-assembled part
        assert self.release_dir is not None
        return iter(embed_todo(self.store, self.release_dir, part))

    def start(self, stack: ExitStack) -> None:
        loaded = profiles.llm(self.settings, self.llm)
        device = device_for(self.settings.device)
        if device.type == "cuda" and self.rank is not None:
            device = torch.device("cuda", self.rank % torch.cuda.device_count())
        self.threads(0)  # no decode workers: the tokenizer runs in this process, between batches
        dtype = _dtype(self.settings.embed.dtype, device)
        model = loaded.model if loaded.split else loaded.model.to(device=device, dtype=dtype)
        self.store.revision = loaded.revision
        self.tokenizer = loaded.processor
        cfg = self.settings.embed
        compile_blocks = cfg.compile_blocks and device.type == "cuda"
        shared = cfg.shared_first if cfg.shared_first is not None else device.type == "cuda"
        self.pooler = LayerPooler(model, compile_blocks=compile_blocks, shared_first=shared)
        stack.callback(self.pooler.close)

    def batches(self, items: Iterator[Todo]) -> Iterator[PooledBatch]:
        """Token-budget batches of equal-length prompts, each batch's vectors copied to the host
        asynchronously (the writer thread waits for them, never the model). Prompts are tokenised
        a chunk at a time, so memory holds one chunk's tokens whatever the release's size."""
        for chunk in batched(items, TOKENIZE_CHUNK):
            self.items: list[Todo] = chunk  # what `decide` reads a batch's indices from
            self.groups = (
                _same_prompt(chunk) if self.settings.embed.dedupe else [[i] for i in range(len(chunk))]
            )
            ids = self.tokenizer([chunk[g[0]][1] for g in self.groups])["input_ids"]
            yield from self.pooler.run(ids, self.settings.embed.batch_tokens)

    def decide(self, batch: PooledBatch) -> Rows:
        return [
            {
                "sample_id": self.items[i][0],
                "prompt_sha1": self.items[i][2],
                "status": OK,
                "reason": None,
                "vectors": (batch, j),  # (B, L, H) host tensor and the row: read on the writer thread
            }
            for j, u in enumerate(batch.indices)
            for i in self.groups[u]  # every item with this prompt
        ]

    def part_rows(self) -> int:
        """Prompts in a written part: `embed.part_bytes` of vectors (every layer's, float16), and
        never fewer than `part_size` (few large files, not many small ones: each is fsynced)."""
        row = len(self.pooler.layers) * self.pooler.base.config.hidden_size * 2
        return max(self.settings.part_size, self.settings.embed.part_bytes // row)

    def parts(self, rows: Iterable[Rows]) -> Iterator[Rows]:
        """Batches gathered until a part's worth, then cut into parts of `part_rows` (the unit of
        resume stays bounded whatever the batch size)."""
        size, group = self.part_rows(), []
        for batch in rows:
            group.extend(batch)
            if len(group) >= size:
                yield from batched(group, size)
                group = []
        if group:
            yield from batched(group, size)

    def write(self, rows: Rows) -> None:
        vectors = np.stack([batch.numpy()[j] for batch, j in (r["vectors"] for r in rows)])
        self.store.write_part([r["sample_id"] for r in rows], [r["prompt_sha1"] for r in rows], vectors)


def _same_prompt(chunk: list[Todo]) -> list[list[int]]:
    """The chunk's indices grouped by prompt, each group in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, (_, prompt, _) in enumerate(chunk):
        groups.setdefault(prompt, []).append(i)
    return list(groups.values())


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
    stage = EmbedStage(settings, data, release, llm)
    model_id = stage.store.model_id
    todo = list(stage.todo(part))
    workers = min(settings.embed.workers, len(todo))
    if workers <= 1:
        stage.given = todo
        return run_stage(stage, progress).processed, model_id
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


def embed_slice(
    settings: Settings, data: DataDir, llm: str | None, todo: list[Todo], rank: int | None
) -> int:
    """One worker process's slice of the prompts, on its own device."""
    return run_stage(EmbedStage(settings, data, None, llm, todo, rank)).processed


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
