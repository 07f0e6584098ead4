"""Exports of a release to what the paper's public training code reads.

- `imagefolder`: `train/<sample_id>.jpg` + `train/metadata.jsonl` rows `{file_name, text, prompt}`
  (text = simple prompt, prompt = complex prompt), which Hugging Face `datasets`' imagefolder
  loader and SUR-adapter's `SUR_adapter_train.py` read as they are.
- `surd-adapter`: the imagefolder plus `prompt2vec/<layer>.pt`, a `{simple prompt: tensor}` dict of
  one LLM layer, the format the paper's trainer loads with `torch.load`.
Both are written whole into a temp folder beside `--out` and swapped into place only when every
part succeeded, so a failed export never touches an earlier one. An export carries a marker file
(`.surd-export.json`: the release, its format, when); an existing `--out` without one is not ours
and is refused unless forced. Each export is logged in the data root (`state/exports.jsonl`), so
a takedown can list the exports made from releases that held the content.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
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


MARKER = ".surd-export.json"


class ExportRefused(ValueError):
    """`--out` exists and is not an export of this project (no marker): never deleted unasked."""


def export_imagefolder(release: Path, tmp: Path, safety: SafetyFilter = SafetyFilter()) -> tuple[int, int]:
    """Into `tmp`: (rows written, rows the safety filter left out)."""
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
    torch.save(table, out_file)
    return len(table)


def export_release(
    release: Path,
    out: Path,
    fmt: str,
    embeddings: Path | None = None,
    layer: int = -1,
    safety: SafetyFilter = SafetyFilter(),
    force: bool = False,
) -> dict:
    if fmt not in ("imagefolder", "surd-adapter"):
        raise ValueError(f"unknown export format {fmt!r}; valid: imagefolder, surd-adapter")
    if fmt == "surd-adapter" and embeddings is None:
        raise ValueError("the surd-adapter export needs embeddings: run `surd embed` first")
    if out.exists() and not force and not (out / MARKER).exists():
        what = "a folder" if out.is_dir() else "a file"
        raise ExportRefused(
            f"{out} is {what} that is not a SURD export (no {MARKER}): choose another --out, or --force "
            "to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{uuid.uuid4().hex[:8]}-{out.name}"
    try:
        n, left_out = export_imagefolder(release, tmp, safety)
        result: dict = {"imagefolder": str(out), "rows": n, "left_out_by_nsfw": left_out}
        if fmt == "surd-adapter":
            assert embeddings is not None
            result["prompt2vec"] = str(out / "prompt2vec" / f"{layer}.pt")
            result["prompts"] = export_prompt2vec(
                release, embeddings, layer, tmp / "prompt2vec" / f"{layer}.pt", safety
            )
        marker = {"release": release.name, "format": fmt, "rows": n, "at": datetime.now(UTC).isoformat()}
        (tmp / MARKER).write_text(json.dumps(marker))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing, and `out` as it was
        raise
    _swap(tmp, out)
    _log(release, {**marker, "path": str(out.resolve())})
    return result


def _log(release: Path, entry: dict) -> None:
    """One line per export in the data root's `state/exports.jsonl` (appended, flushed)."""
    log = release.parent.parent / "state" / "exports.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def made_from(root: Path, release_names: set[str]) -> list[dict]:
    """The logged exports of these releases that are still where they were written."""
    log = root / "state" / "exports.jsonl"
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["release"] in release_names and (Path(r["path"]) / MARKER).exists()]


def _swap(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".old-{uuid.uuid4().hex[:8]}-{out.name}"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(tmp, out)
