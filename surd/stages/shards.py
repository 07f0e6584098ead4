"""A release's shards: one run of Parquet files per split (`shard-<split>-NNNNN.parquet`, every split
with at least one, so `load_dataset` gives all three), each of at most `release.shard_rows` rows and
`release.shard_bytes` image bytes; and the parent's shards that can be hard-linked instead of
written again (every row of them released again unchanged, in the same split)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.releases import ShardFile
from surd.release_settings import ReleaseSettings
from surd.stages.splits import SPLITS


def shard_name(split: str, index: int) -> str:
    return f"shard-{split}-{index:05d}.parquet"


def write_shards(
    data: DataDir,
    rows: pa.Table,
    folder: Path,
    taken: dict[str, int],
    cfg: ReleaseSettings,
    schema: pa.Schema,
) -> Iterator[dict[str, Any]]:
    """Write the rows with their image bytes into each split's shards, numbered on from `taken`
    (its shards already there: reused), and an empty shard for a split that has none; yields each
    shard's manifest entry. Images are read in storage order, a part at a time, and written a row
    group at a time: memory holds one part and a row group a split whatever the release's size."""
    at = {sid: k for k, sid in enumerate(rows.column("sample_id").to_pylist())}
    split_of = dict(zip(rows.column("sample_id").to_pylist(), rows.column("split").to_pylist(), strict=True))
    index = dict(taken)
    out: dict[str, ShardFile] = {}
    found = 0
    try:
        for img in data.table("images").iter_lookup(at, ["image", "sha256"]):
            split = split_of[img["sample_id"]]
            row = {**rows.slice(at[img["sample_id"]], 1).to_pylist()[0], **img}
            nbytes = len(img["image"] or b"") + 1024
            row["image"] = {"bytes": img["image"], "path": None}  # Hugging Face's Image
            cur = out.get(split)
            if cur is not None and (cur.rows >= cfg.shard_rows or cur.bytes + nbytes > cfg.shard_bytes):
                yield _closed(out.pop(split), split)
                cur = None
            if cur is None:
                cur = out[split] = _open(folder, split, index, cfg, schema)
            cur.add(row, nbytes)
            found += 1
        if found != len(at):
            raise RuntimeError(f"{len(at) - found} accepted samples have no stored image; no release written")
        for split in SPLITS:
            if split in out:
                yield _closed(out.pop(split), split)
            elif index.get(split, 0) == 0:  # an empty split still has its file: load_dataset lists it
                yield _closed(_open(folder, split, index, cfg, schema), split)
    except BaseException:
        for f in out.values():
            f.abort()  # the temp folder goes with them; the next release removes it
        raise


def _open(
    folder: Path, split: str, index: dict[str, int], cfg: ReleaseSettings, schema: pa.Schema
) -> ShardFile:
    n = index.get(split, 0)
    index[split] = n + 1
    return ShardFile(folder / shard_name(split, n), cfg.row_group_rows, schema)


def _closed(f: ShardFile, split: str) -> dict[str, Any]:
    return {**f.close(), "split": split}


def reusable(
    parent_dir: Path,
    parent: dict[str, Any],
    current: dict[str, str],
    split_now: dict[str, str],
    schema: pa.Schema,
) -> list[tuple[str, str, list[str]]]:
    """Parent shards every row of which is released again unchanged and in the same split:
    (file, split, its sample ids). A shard written with other columns is written anew."""
    out = []
    for shard in parent["shards"]:
        path = parent_dir / shard["file"]
        if not pq.read_schema(path).equals(schema):
            continue
        t = pq.read_table(path, columns=["sample_id", "split"])
        ids, was = t.column("sample_id").to_pylist(), t.column("split").to_pylist()
        if ids and all(
            current.get(i) == parent["fingerprint"].get(i) and split_now.get(i) == s
            for i, s in zip(ids, was, strict=True)
        ):
            out.append((shard["file"], was[0], ids))
    return out
