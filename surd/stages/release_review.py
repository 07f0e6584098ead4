"""A new release looked at before it goes out: what changed since its parent (`changes.parquet`),
its statistics (`stats.json`), and the gate's verdict against the last published release (a held
release is written and verified, never published, announced or trained on until approved)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.releases import held, releases
from surd.settings import Settings
from surd.stages import changes, gate, stats

STATS = "stats.json"
CHANGES = "changes.parquet"


def last_published_stats(data: DataDir) -> dict[str, Any] | None:
    """The statistics of the latest release that is out (not held), if it has them."""
    for path in reversed(releases(data)):
        if not held(path):
            f = path / STATS
            return json.loads(f.read_text()) if f.exists() else None
    return None


def review_of_release(
    data: DataDir, tmp: Path, parent_dir: Path | None, man: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Write the changes and statistics of the release in `tmp`; the manifest's `changes`,
    `stats` summary and, when the gate holds it, `held`."""
    version = man["release"]
    if parent_dir is not None:
        diff = changes.compare(parent_dir, tmp, man["removed_reasons"], version)
    else:
        ids = [r["sample_id"] for r in _ids(tmp)]
        diff = pa.Table.from_pylist([{"sample_id": s, "change": "added"} for s in ids], changes.CHANGES)
    changes.write(diff, tmp / CHANGES)
    st = stats.compute(data, tmp, man)
    (tmp / STATS).write_text(json.dumps(st, indent=1, sort_keys=True))
    moved = sum(
        1
        for r in diff.to_pylist()
        if r["change"] == "changed"
        and "split" in (r["fields"] or [])
        and "split_reason" not in (r["fields"] or [])
    )
    reasons = gate.check(last_published_stats(data), st, moved, settings.release.gate)
    out: dict[str, Any] = {"changes": {"since": man.get("parent"), **changes.summary(diff)}}
    out["decontaminated_rows"] = st["splits"]["decontaminated"]
    if reasons:
        out["held"] = {"reasons": reasons, "at": datetime.now(UTC).isoformat()}
    return out


def _ids(folder: Path) -> list[dict[str, Any]]:
    return [
        r
        for shard in sorted(folder.glob("shard-*.parquet"))
        for r in pq.read_table(shard, columns=["sample_id"]).to_pylist()
    ]
