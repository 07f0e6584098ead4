"""The data directory: where each table, release, embedding set and run lives, and its version.

```
<root>/SCHEMA_VERSION            {"schema_version": 1}
<root>/tables/<table>/part-*.parquet
<root>/state/<name>.json         crawl cursors and other checkpoints
<root>/review/queue.db           the review queue (SQLite default)
<root>/releases/vNNNN/           shards, manifest.json, README.md (dataset card)
<root>/embeddings/<llm>/part-*/layer-NN.parquet
<root>/runs/<run id>/            adapter checkpoints, metrics, evaluation report
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.schemas import CRAWL_PAGES, CRAWL_TABLES, SCHEMA_VERSION, TableSpec
from storage.tables import PartTable, atomic_write_bytes


class DataRootError(RuntimeError):
    """The data root cannot be used: missing (for a reader), not a folder, or not ours."""


class SchemaVersionError(DataRootError):
    """The data directory was written by an incompatible version of the schema."""


def _ours_early(name: str) -> bool:
    """What another process of ours may have put in a new data root before its SCHEMA_VERSION
    marker exists: the marker's own temp file, and the write locks (storage.locks)."""
    return name.startswith(".tmp-") or name == "locks"


def _marker_version(marker: Path) -> Any:
    """The schema version a data root's marker names; a damaged marker is a data-root error."""
    try:
        value = json.loads(marker.read_bytes().decode("utf-8"))
        return value.get("schema_version") if isinstance(value, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataRootError(
            f"{marker} is damaged (not the JSON this code writes); if this is a SURD data root, write "
            f'{{"schema_version": {SCHEMA_VERSION}}} into it; else point SURD_DATA_ROOT elsewhere'
        ) from None


class DataDir:
    """A data root; `tables` are the schemas of the tables its writers make (the pipeline's
    declaration hands them over: surd.chain.Pipeline.data_dir). A table not among them is read
    with the schema its parts were written with."""

    def __init__(self, root: Path | str, tables: Mapping[str, TableSpec] | None = None) -> None:
        self.root = Path(root)
        self.tables: dict[str, TableSpec] = {**CRAWL_TABLES, **(tables or {})}

    def open(self, create: bool = True) -> DataDir:
        """Create the directory (unless `create` is False: readers never create one), or check
        that an existing one has our schema version."""
        marker = self.root / "SCHEMA_VERSION"
        if self.root.exists() and not self.root.is_dir():
            raise DataRootError(f"data root {self.root} is not a folder; point SURD_DATA_ROOT at a folder")
        if not create and not self.root.exists():
            raise DataRootError(
                f"data root {self.root} does not exist; check SURD_DATA_ROOT (or run a stage to create it)"
            )
        # listed before the marker is looked for: a process of ours writes the marker before
        # anything else, so what the listing holds is foreign only if the marker is still missing
        # after it (the other order refused a root another process had just made)
        names = [p.name for p in self.root.iterdir()] if self.root.is_dir() else []
        if marker.exists():
            found = _marker_version(marker)
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.root} holds data of schema version {found}, this code writes version "
                    f"{SCHEMA_VERSION}; use another data root (SURD_DATA_ROOT) or migrate it"
                )
        else:
            if any(not _ours_early(name) for name in names):
                raise SchemaVersionError(
                    f"{self.root} is not empty and has no SCHEMA_VERSION marker; refusing to mix "
                    "data. Point SURD_DATA_ROOT at an empty or SURD data directory"
                )
            if not create:
                return self  # an empty folder: nothing to read, and a reader writes nothing
            # two processes opening a new root at once both write the same marker (atomically)
            atomic_write_bytes(marker, json.dumps({"schema_version": SCHEMA_VERSION}).encode())
        return self

    def table(self, name: str, schema: pa.Schema | None = None, key: str = "sample_id") -> PartTable:
        """A table by name: its declared schema, else the schema its parts were written with; a
        table neither declared nor on disk is an error naming the known ones."""
        compression = "zstd"
        if schema is None:
            if name == "crawl_pages":
                schema, key = CRAWL_PAGES, "page_id"
            elif name in self.tables:
                schema, compression = self.tables[name].schema, self.tables[name].compression
            else:
                parts = sorted((self.tables_dir / name).glob("part-*.parquet"))
                if not parts:
                    known = sorted({*self.tables, *self.on_disk()})
                    raise KeyError(f"no table {name!r}: the known ones are {', '.join(known)}")
                schema = pq.read_schema(parts[0]).remove_metadata()
        return PartTable(self.tables_dir, name, schema, key, compression)

    def on_disk(self) -> list[str]:
        """The tables with at least one part."""
        if not self.tables_dir.exists():
            return []
        return sorted(
            p.name for p in self.tables_dir.iterdir() if p.is_dir() and any(p.glob("part-*.parquet"))
        )

    def table_exists(self, name: str) -> bool:
        """Whether table `name` has a part."""
        return any((self.tables_dir / name).glob("part-*.parquet"))

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def review_dir(self) -> Path:
        return self.root / "review"

    def state(self, name: str) -> dict[str, Any]:
        path = self.root / "state" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save_state(self, name: str, value: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / "state" / f"{name}.json", json.dumps(value, sort_keys=True).encode())
