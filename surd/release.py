"""Dataset releases: accepted samples → immutable, numbered folders of Parquet shards.

A release is assembled in a hidden temp folder and renamed into place as a whole, so a kill
during writing never leaves a visible half release. The manifest lists each shard with its row
count and sha256, the schema version, the settings, the model ids, the code version and the
parent release with the ids added and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from storage.layout import DataDir
from storage.schemas import RELEASE, SCHEMA_VERSION
from storage.tables import fault_point, write_parquet_atomic
from surd import __version__
from surd.review import queue
from surd.settings import Settings
from surd.stage import lookup

LICENCE_NOTES = {
    "civitai": "Civitai images: rights stay with the uploaders; see https://civitai.com/content/tos",
    "lexica": "Lexica images: https://lexica.art/license",
    "sdonline": "Stable Diffusion Online: CreativeML Open RAIL-M (CompVis SD licence)",
}


def releases(data: DataDir) -> list[Path]:
    if not data.releases_dir.exists():
        return []
    return sorted(p for p in data.releases_dir.iterdir() if (p / "manifest.json").exists())


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def accepted_rows(settings: Settings, data: DataDir) -> list[dict[str, Any]]:
    engine = queue.connect(settings.review_database_url)
    try:
        standing = {k: v for k, v in queue.effective(engine).items() if v["decision"] == "accept"}
    finally:
        engine.dispose()
    ids = set(standing)
    imgs = lookup(data.table("images"), ids, ["image", "sha256"])
    caps = lookup(data.table("captions"), ids, ["simple_prompt"])
    clip = lookup(data.table("clip_scores"), ids, ["p_simple", "p_complex"])
    raw = lookup(
        data.table("raw_items"),
        ids,
        ["complex_prompt", "negative_prompt", "source", "source_item_id", "source_url"],
    )
    rows = []
    for sid in sorted(ids):
        d, r = standing[sid], raw[sid]
        rows.append(
            {
                "sample_id": sid,
                "image": imgs[sid]["image"],
                "sha256": imgs[sid]["sha256"],
                "simple_prompt": d["simple_prompt"] or caps[sid]["simple_prompt"],
                "caption": caps[sid]["simple_prompt"],
                **clip[sid],
                **r,
                "decision_id": d["id"],
                "decided_by_kind": d["actor_kind"],
                "licence_note": LICENCE_NOTES.get(r["source"], ""),
            }
        )
    return rows


def create_release(settings: Settings, data: DataDir, counts: dict[str, Any] | None = None) -> Path | None:
    """Write a new release of the accepted samples; None when nothing changed since the last."""
    rows = accepted_rows(settings, data)
    existing = releases(data)
    parent = manifest(existing[-1]) if existing else None
    fingerprint = {
        r["sample_id"]: hashlib.sha1((r["simple_prompt"] or "").encode()).hexdigest() for r in rows
    }
    if parent is not None and parent["fingerprint"] == fingerprint:
        return None
    if not rows:
        return None
    version = f"v{len(existing) + 1:04d}"
    data.releases_dir.mkdir(parents=True, exist_ok=True)
    for stale in data.releases_dir.glob(".tmp-*"):
        shutil.rmtree(stale)  # left by a killed writer; never visible as a release
    tmp = data.releases_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    shards = []
    step = settings.release.shard_rows
    for i in range(0, len(rows), step):
        path = tmp / f"shard-{i // step:05d}.parquet"
        write_parquet_atomic(
            pa.Table.from_pylist(rows[i : i + step], RELEASE),
            path,
            row_group_size=settings.release.row_group_rows,
        )
        shards.append({"file": path.name, "rows": len(rows[i : i + step]), "sha256": _sha256(path)})
        fault_point("release", len(shards))
    before = set(parent["fingerprint"]) if parent else set()
    man = {
        "release": version,
        "created_at": datetime.now(UTC).isoformat(),
        "schema_version": SCHEMA_VERSION,
        "code_version": __version__,
        "rows": len(rows),
        "shards": shards,
        "parent": parent["release"] if parent else None,
        "added": sorted(set(fingerprint) - before),
        "removed": sorted(before - set(fingerprint)),
        "fingerprint": fingerprint,
        "counts": counts or {},
        "model_ids": _model_ids(data),
        "settings": settings.provenance(),
    }
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1, sort_keys=True))
    (tmp / "README.md").write_text(dataset_card(man, rows))
    os.replace(tmp, data.releases_dir / version)
    return data.releases_dir / version


def _model_ids(data: DataDir) -> dict[str, list[str]]:
    out = {}
    for name in ("captions", "clip_scores"):
        ids = {p.get("model_id") for p in data.table(name).provenance()}
        out[name] = sorted(i for i in ids if i)
    return out


def dataset_card(man: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    def lengths(key: str) -> str:
        vals = [len((r[key] or "").split()) for r in rows]
        return f"mean {statistics.mean(vals):.1f} words, median {statistics.median(vals)}, max {max(vals)}"

    by_source: dict[str, int] = {}
    for r in rows:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    counts = man.get("counts", {})
    lines = [
        f"# SURD release {man['release']}",
        "",
        f"{man['rows']} samples in {len(man['shards'])} shard(s); parent: {man['parent'] or 'none'}; "
        f"added {len(man['added'])}, removed {len(man['removed'])}.",
        "",
        "## Counts in the paper's terms",
        "",
        "| collected (raw items with a prompt) | images kept | captioned | CLIP-kept | accepted |",
        "|---|---|---|---|---|",
        "| "
        + " | ".join(
            str(counts.get(k, "?")) for k in ("raw_items", "images", "captions", "clip_scores", "accepted")
        )
        + " |",
        "",
        "## Per source",
        "",
        *[f"- {s}: {n}" for s, n in sorted(by_source.items())],
        "",
        "## Prompt lengths",
        "",
        f"- complex prompts: {lengths('complex_prompt')}",
        f"- simple prompts: {lengths('simple_prompt')}",
        "",
        "## Licences",
        "",
        *[f"- {LICENCE_NOTES[s]}" for s in sorted(by_source) if s in LICENCE_NOTES],
        "",
        f"Made by SURD builder {man['code_version']} with models {json.dumps(man['model_ids'])}.",
    ]
    return "\n".join(lines) + "\n"


def verify(path: Path) -> list[str]:
    """Recompute every shard's hash and row count; returns the problems found (empty = sound)."""
    import pyarrow.parquet as pq

    problems = []
    for shard in manifest(path)["shards"]:
        f = path / shard["file"]
        if not f.exists():
            problems.append(f"{shard['file']}: missing")
            continue
        if _sha256(f) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 mismatch")
            continue
        if pq.ParquetFile(f).metadata.num_rows != shard["rows"]:
            problems.append(f"{shard['file']}: row count mismatch")
    return problems
