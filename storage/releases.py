"""Release files, both directions: the releases of a data root and their manifests, shards written a
row group at a time and hashed as they are written, shards read back (streamed record batches
with column projection), and publishing a finished release folder to a local path or an object
store (fsspec). Which rows a release holds is decided in surd.stages.release."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.layout import DataDir


def releases(data: DataDir) -> list[Path]:
    if not data.releases_dir.exists():
        return []
    # a temp folder (".tmp-…", a writer's, alive or killed) is never a release, whatever it holds
    return sorted(
        p
        for p in data.releases_dir.iterdir()
        if not p.name.startswith(".") and (p / "manifest.json").exists()
    )


def unreleased(data: DataDir) -> list[Path]:
    """Release-named folders without a manifest (`vNNNN/` copied by hand, or half restored): never
    a release, and in the way of the next one."""
    if not data.releases_dir.exists():
        return []
    return sorted(
        p
        for p in data.releases_dir.iterdir()
        if p.is_dir()
        and p.name.startswith("v")
        and p.name[1:].isdigit()
        and not (p / "manifest.json").exists()
    )


def quarantine(data: DataDir) -> list[str]:
    """Move every `unreleased` folder aside to `.quarantined-vNNNN-<time>`; the names moved."""
    from datetime import UTC, datetime

    moved = []
    for p in unreleased(data):
        target = p.with_name(f".quarantined-{p.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        p.rename(target)
        moved.append(f"{p.name} → {target.name}")
    return moved


def highest_number(data: DataDir) -> int:
    """The highest release number used here (releases, and folders quarantined): never reused. A
    writer's temp folder does not count (a killed writer's number is made again)."""
    if not data.releases_dir.exists():
        return 0
    names = [p.name.removeprefix(".quarantined-")[:5] for p in data.releases_dir.iterdir()]
    nums = [int(n[1:]) for n in names if n.startswith("v") and n[1:].isdigit()]
    return max(nums, default=0)


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


APPROVAL = "approval.json"  # written into a held release's folder when a person lets it out


def held(path: Path) -> bool:
    """Whether a release is held by the gate and not approved: not published, announced or trained."""
    return bool(manifest(path).get("held")) and not (path / APPROVAL).exists()


def approval(path: Path) -> dict[str, Any] | None:
    f = path / APPROVAL
    return json.loads(f.read_text()) if f.exists() else None


def published(data: DataDir) -> list[Path]:
    """The releases that are out: every release but the held ones, oldest first."""
    return [p for p in releases(data) if not held(p)]


class _HashingFile(io.FileIO):
    """A file opened for writing that hashes what goes through it (no second read)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "wb")
        self.sha256 = hashlib.sha256()
        self.discarding = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.discarding:  # a shard given up: what is left of it goes nowhere
            return len(view)
        done = 0
        while done < len(view):
            done += super().write(view[done:]) or 0
        self.sha256.update(view)
        return done


class ShardFile:
    """One shard written a row group at a time, hashed as it is written, fsynced on close."""

    def __init__(self, path: Path, group_rows: int, schema: pa.Schema) -> None:
        self.path, self.group_rows, self.schema = path, group_rows, schema
        self.fh = _HashingFile(path)
        self.writer = pq.ParquetWriter(self.fh, schema, compression="zstd")
        self.group: list[dict[str, Any]] = []
        self.rows = self.bytes = 0

    def add(self, row: dict[str, Any], nbytes: int) -> None:
        self.group.append(row)
        self.rows += 1
        self.bytes += nbytes
        if len(self.group) >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.group:
            self.writer.write_table(pa.Table.from_pylist(self.group, self.schema))
            self.group = []

    def close(self) -> dict[str, Any]:
        try:
            self._flush()
            self.writer.close()
            os.fsync(self.fh.fileno())
        except BaseException:
            self.abort()
            raise
        self.fh.close()
        return {"file": self.path.name, "rows": self.rows, "sha256": self.fh.sha256.hexdigest()}

    def abort(self) -> None:
        """Give the shard up after a failed write (a full disk): its file is left incomplete in a
        temporary folder that is removed, so the writer's footer goes nowhere instead of failing
        again (and again when the writer is collected, on stderr)."""
        self.group = []
        self.fh.discarding = True
        self.writer.close()
        self.fh.close()


def stream(
    release: Path | str, columns: Sequence[str] | None = None, batch_size: int = 256, filesystem: Any = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of a release, reading only the asked columns (and one row group at a time)."""
    root = str(release).rstrip("/")
    man = _read_json(f"{root}/manifest.json", filesystem)
    files = [f"{root}/{s['file']}" for s in man["shards"]]
    dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    yield from dataset.to_batches(columns=list(columns) if columns else None, batch_size=batch_size)


def read_columns(
    release: Path | str, columns: Sequence[str], filesystem: Any = None, split: str | None = None
) -> pa.Table:
    """The asked columns of every shard of a release (of split `split` only, when given: a release
    from before splits has only `train`), in the manifest's shard order."""
    root = str(release).rstrip("/")
    man = _read_json(f"{root}/manifest.json", filesystem)
    tables = [
        pq.read_table(f"{root}/{s['file']}", columns=list(columns), filesystem=filesystem)
        for s in man["shards"]
        if split is None or s.get("split", "train") == split
    ]
    if not tables:
        raise ValueError(f"release {root} has no shards")
    return pa.concat_tables(tables)


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
