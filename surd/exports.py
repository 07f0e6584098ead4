"""Exports of a release to what the paper's public training code reads.

- `imagefolder`: `train/<sample_id>.jpg` + `train/metadata.jsonl` rows `{file_name, text, prompt}`
  (text = simple prompt, prompt = complex prompt), which Hugging Face `datasets`' imagefolder
  loader and SUR-adapter's `SUR_adapter_train.py` read as they are.
- `surd-adapter`: the imagefolder plus `prompt2vec/<layer>.pt`, a `{simple prompt: tensor}` dict of
  one LLM layer, the format the paper's trainer loads with `torch.load`.
Both are written into a temp folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from storage.embeddings import prompt_sha1, read_layer
from storage.releases import stream
from storage.schemas import image_bytes


@dataclass(frozen=True)
class SafetyFilter:
    """Rows kept by `--max-nsfw`: a known `safety_level` at most `max_level` (unlabelled rows only
    with `keep_unlabelled`). No `max_level`: every row."""

    max_level: int | None = None
    keep_unlabelled: bool = False

    def keeps(self, level: int | None) -> bool:
        if self.max_level is None:
            return True
        return self.keep_unlabelled if level is None else level <= self.max_level

    def columns(self, release: Path) -> list[str]:
        if self.max_level is None:
            return []
        shards = sorted(release.glob("shard-*.parquet"))
        if shards and "safety_level" not in pq.read_schema(shards[0]).names:
            raise ValueError(f"{release.name} has no safety_level column: `surd release create` remakes it")
        return ["safety_level"]


def export_imagefolder(release: Path, out: Path, safety: SafetyFilter = SafetyFilter()) -> tuple[int, int]:
    """(rows written, rows the safety filter left out)."""
    tmp = out.parent / f".tmp-{uuid.uuid4().hex[:8]}-{out.name}"
    train = tmp / "train"
    train.mkdir(parents=True)
    n = left_out = 0
    with (train / "metadata.jsonl").open("w") as meta:
        cols = ["sample_id", "image", "simple_prompt", "complex_prompt", *safety.columns(release)]
        for batch in stream(release, cols):
            for row in batch.to_pylist():
                if not safety.keeps(row.get("safety_level")):
                    left_out += 1
                    continue
                name = f"{row['sample_id']}.jpg"
                (train / name).write_bytes(image_bytes(row["image"]) or b"")
                meta.write(
                    json.dumps(
                        {"file_name": name, "text": row["simple_prompt"], "prompt": row["complex_prompt"]},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                n += 1
    _swap(tmp, out)
    return n, left_out


def export_prompt2vec(
    release: Path, embeddings: Path, layer: int, out_file: Path, safety: SafetyFilter = SafetyFilter()
) -> int:
    """`{simple prompt: float32 tensor}` of one layer (1..L, -1 = last) for the release's prompts."""
    import torch

    cols = ["sample_id", "simple_prompt", *safety.columns(release)]
    rows = [r for b in stream(release, cols) for r in b.to_pylist() if safety.keeps(r.get("safety_level"))]
    vectors, _ = read_layer(
        embeddings, layer, {r["sample_id"]: prompt_sha1(r["simple_prompt"]) for r in rows}
    )
    table = {}
    for row in rows:
        if row["sample_id"] not in vectors:
            raise ValueError(
                f"sample {row['sample_id']} has no embedding of its prompt in {embeddings}; run `surd embed`"
            )
        table[row["simple_prompt"]] = torch.from_numpy(vectors[row["sample_id"]])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out_file.name}")
    torch.save(table, tmp)
    os.replace(tmp, out_file)
    return len(table)


def export_release(
    release: Path,
    out: Path,
    fmt: str,
    embeddings: Path | None = None,
    layer: int = -1,
    safety: SafetyFilter = SafetyFilter(),
) -> dict:
    if fmt not in ("imagefolder", "surd-adapter"):
        raise ValueError(f"unknown export format {fmt!r}; valid: imagefolder, surd-adapter")
    n, left_out = export_imagefolder(release, out, safety)
    result: dict = {"imagefolder": str(out), "rows": n, "left_out_by_nsfw": left_out}
    if fmt == "surd-adapter":
        if embeddings is None:
            raise ValueError("the surd-adapter export needs embeddings: run `surd embed` first")
        pt = out / "prompt2vec" / f"{layer}.pt"
        result["prompt2vec"] = str(pt)
        result["prompts"] = export_prompt2vec(release, embeddings, layer, pt, safety)
    return result


def _swap(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".old-{uuid.uuid4().hex[:8]}-{out.name}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
