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
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.schemas import COMPRESSION, CRAWL_PAGES, SCHEMA_VERSION, STAGE_TABLES
from storage.tables import PartTable, atomic_write_bytes


class DataRootError(RuntimeError):
    """The data root cannot be used: missing (for a reader), not a folder, or not ours."""


class SchemaVersionError(DataRootError):
    """The data directory was written by an incompatible version of the schema."""


def _ours_early(name: str) -> bool:
    """What another process of ours may have put in a new data root before its SCHEMA_VERSION
    marker exists: the marker's own temp file, and the write locks (storage.locks)."""
    return name.startswith(".tmp-") or name == "locks"


class DataDir:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

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
        if marker.exists():
            found = json.loads(marker.read_text()).get("schema_version")
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.root} holds data of schema version {found}, this code writes version "
                    f"{SCHEMA_VERSION}; use another data root (SURD_DATA_ROOT) or migrate it"
                )
        else:
            if self.root.exists() and any(not _ours_early(p.name) for p in self.root.iterdir()):
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
        """A stage table by name: its registered schema (storage.schemas.register), else the
        schema its parts were written with; a table neither registered nor on disk is an error."""
        if schema is None:
            if name == "crawl_pages":
                schema, key = CRAWL_PAGES, "page_id"
            elif name in STAGE_TABLES:
                schema = STAGE_TABLES[name]
            else:
                parts = sorted((self.tables_dir / name).glob("part-*.parquet"))
                if not parts:
                    raise KeyError(
                        f"no table {name!r}: the known ones are {', '.join(sorted(STAGE_TABLES))} "
                        "(a stage's table is known once the pipeline's declaration, surd.chain, is imported)"
                    )
                schema = pq.read_schema(parts[0]).remove_metadata()
        return PartTable(self.tables_dir, name, schema, key, COMPRESSION.get(name, "zstd"))

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
