"""Reading released shards: streamed record batches with column projection, and publishing a
finished release folder to a local path or an object store (fsspec)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds


def stream(
    release: Path | str, columns: Sequence[str] | None = None, batch_size: int = 256, filesystem: Any = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of a release, reading only the asked columns (and one row group at a time)."""
    root = str(release).rstrip("/")
    man = _read_json(f"{root}/manifest.json", filesystem)
    files = [f"{root}/{s['file']}" for s in man["shards"]]
    dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    yield from dataset.to_batches(columns=list(columns) if columns else None, batch_size=batch_size)


def _read_json(path: str, filesystem: Any) -> dict[str, Any]:
    if filesystem is None:
        return json.loads(Path(path).read_text())
    with filesystem.open(path, "rb") as fh:
        return json.loads(fh.read())


def publish(local: Path, url: str, **storage_options: Any) -> str:
    """Copy a finished release to `url` (file://, s3://, …): shards and card first, the manifest
    last, so a reader that lists releases by manifest never sees a half-copied one."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url.rstrip("/"), **storage_options)
    target = f"{root}/{local.name}"
    fs.makedirs(target, exist_ok=True)
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name != "manifest.json")
    for f in files:
        fs.put_file(str(f), f"{target}/{f.name}")
    fs.put_file(str(local / "manifest.json"), f"{target}/manifest.json")
    return f"{url.rstrip('/')}/{local.name}"


def list_published(url: str, **storage_options: Any) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url.rstrip("/"), **storage_options)
    if not fs.exists(root):
        return []
    return sorted(
        p.rstrip("/").split("/")[-1]
        for p in fs.ls(root, detail=False)
        if fs.exists(f"{p.rstrip('/')}/manifest.json")
    )


def verify_files(root: str, shards: list[dict[str, Any]], filesystem: Any = None) -> list[str]:
    """Recompute each shard's sha256 and row count; the problems found (empty = sound)."""
    import pyarrow.parquet as pq

    problems = []
    for shard in shards:
        path = f"{root.rstrip('/')}/{shard['file']}"
        opener = filesystem.open if filesystem is not None else open
        try:
            h = hashlib.sha256()
            with opener(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            problems.append(f"{shard['file']}: missing")
            continue
        if h.hexdigest() != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 mismatch (damaged or altered)")
            continue
        with opener(path, "rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        if rows != shard["rows"]:
            problems.append(f"{shard['file']}: {rows} rows, manifest says {shard['rows']}")
    return problems
