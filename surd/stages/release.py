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
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.provenance import code_identity
from storage.releases import ShardFile, manifest, releases, verify_files
from storage.schemas import RELEASE, SCHEMA_VERSION
from storage.tables import fault_point
from surd import __version__
from surd.review import outcome, queue
from surd.settings import ReleaseSettings, Settings
from surd.sources import LICENCE_NOTES, REGISTRY
from surd.stages.card import write_card
from surd.stages.groups import HELD_BACK, cap_groups, group_sizes, prompt_group

RAW_COLUMNS = ("complex_prompt", "negative_prompt", "source", "source_item_id", "source_url")
GENERATION_FROM = ("width", "height", "model", "seed", "nsfw_level", "meta_json")  # → GENERATION


Standing = tuple[dict[str, outcome.Accepted], dict[str, str]]  # accepted outcomes, their captions
ROWS = pa.schema([f for f in RELEASE if f.name not in ("image", "sha256")])  # the images stream in
BATCH = 4096  # rows made Python objects at once


def _accepted(settings: Settings, data: DataDir) -> Standing:
    """The standing accept decisions and the captions of those samples."""
    engine = queue.connect(settings.review_database_url)
    try:
        standing = outcome.accepted(engine)
    finally:
        engine.dispose()
    caps = data.table("captions").iter_lookup(standing, ["simple_prompt"])
    return standing, {r["sample_id"]: r["simple_prompt"] for r in caps}


def _fingerprint(standing: dict[str, outcome.Accepted], caps: dict[str, str]) -> dict[str, str]:
    return {
        sid: _row_key({"simple_prompt": a.simple_prompt or caps[sid], "decision_id": a.id})
        for sid, a in standing.items()
    }


def accepted_rows(settings: Settings, data: DataDir, accepted: Standing | None = None) -> pa.Table:
    """The release rows of the accepted samples, in sample-id order, without their images:
    `write_shards` streams those in (bytes and sha256) from the images table. Rows are made from
    the raw items as they are read and kept as Arrow columns, BATCH at a time, so neither the raw
    metadata nor a Python object per row is held for every sample."""
    standing, caps = accepted or _accepted(settings, data)
    clip = {
        r["sample_id"]: (r["p_simple"], r["p_complex"])
        for r in data.table("clip_scores").iter_lookup(standing, ["p_simple", "p_complex"])
    }
    batches, batch = [], []
    for r in data.table("raw_items").iter_lookup(standing, [*RAW_COLUMNS, *GENERATION_FROM]):
        sid, a = r["sample_id"], standing[r["sample_id"]]
        p_simple, p_complex = clip[sid]
        batch.append(
            {
                "sample_id": sid,
                "simple_prompt": a.simple_prompt or caps[sid],
                "caption": caps[sid],
                "p_simple": p_simple,
                "p_complex": p_complex,
                **{k: r[k] for k in RAW_COLUMNS},
                "prompt_group": prompt_group(r["complex_prompt"]),
                "decision_id": a.id,
                "decided_by_kind": a.actor_kind,
                "licence_note": LICENCE_NOTES.get(r["source"], ""),
                **REGISTRY[r["source"]].generation(r),
            }
        )
        if len(batch) >= BATCH:
            batches.append(pa.Table.from_pylist(batch, ROWS))
            batch = []
    batches.append(pa.Table.from_pylist(batch, ROWS))
    rows = pa.concat_tables(batches)
    if len(rows) != len(standing):
        raise RuntimeError(
            f"{len(standing) - len(rows)} accepted samples have no raw item; no release written"
        )
    return rows.sort_by("sample_id")


def write_shards(
    data: DataDir, rows: pa.Table, folder: Path, first: int, cfg: ReleaseSettings
) -> Iterator[dict[str, Any]]:
    """Write the rows with their image bytes as shards `shard-{first}…` of at most
    `cfg.shard_rows` rows and `cfg.shard_bytes` image bytes; yields each shard's manifest entry.
    The images are read in storage order, a part at a time, and written a row group at a time, so
    memory holds one part and one row group of images whatever the release's size."""
    at = {sid: k for k, sid in enumerate(rows.column("sample_id").to_pylist())}
    out: ShardFile | None = None
    index, found = first, 0
    for img in data.table("images").iter_lookup(at, ["image", "sha256"]):
        row = {**rows.slice(at[img["sample_id"]], 1).to_pylist()[0], **img}
        nbytes = len(img["image"] or b"") + 1024
        row["image"] = {"bytes": img["image"], "path": None}  # Hugging Face's Image
        if out is not None and (out.rows >= cfg.shard_rows or out.bytes + nbytes > cfg.shard_bytes):
            yield out.close()
            index, out = index + 1, None
        if out is None:
            out = ShardFile(folder / f"shard-{index:05d}.parquet", cfg.row_group_rows)
        out.add(row, nbytes)
        found += 1
    if found != len(at):
        if out is not None:
            out.close()  # the temp folder goes with it; the next release removes it
        raise RuntimeError(f"{len(at) - found} accepted samples have no stored image; no release written")
    if out is not None:
        yield out.close()


def _row_key(row: dict[str, Any]) -> str:
    """What makes a released row the same row: its simple prompt and the decision behind it."""
    return hashlib.sha1(f"{row['simple_prompt'] or ''}\x1f{row['decision_id']}".encode()).hexdigest()


def _same_schema(folder: Path, man: dict[str, Any]) -> bool:
    """Whether a release was written with today's columns and types (else it is remade)."""
    if man.get("columns") != RELEASE.names:
        return False
    return not man["shards"] or pq.read_schema(folder / man["shards"][0]["file"]).equals(RELEASE)


def _reusable(
    parent_dir: Path, parent: dict[str, Any], current: dict[str, str]
) -> list[tuple[str, list[str]]]:
    """Parent shards every row of which is released again unchanged: (file, its sample ids)."""
    out = []
    for shard in parent["shards"]:
        if not pq.read_schema(parent_dir / shard["file"]).equals(RELEASE):
            continue  # written with other columns (an older release): its rows are written anew
        ids = pq.read_table(parent_dir / shard["file"], columns=["sample_id"]).column(0).to_pylist()
        if all(current.get(i) == parent["fingerprint"].get(i) for i in ids):
            out.append((shard["file"], ids))
    return out


def _inputs(fingerprint: dict[str, str], cap: int | None) -> str:
    """What a release is made from: every accepted sample's key and the per-group cap."""
    return hashlib.sha256(json.dumps([fingerprint, cap], sort_keys=True).encode()).hexdigest()


def _unchanged(parent: dict[str, Any] | None, fingerprint: dict[str, str], cap: int | None) -> bool:
    if parent is None:
        return False
    if "inputs" in parent:
        return bool(parent["inputs"] == _inputs(fingerprint, cap))
    return cap is None and parent["fingerprint"] == fingerprint  # written before the cap existed


def create_release(settings: Settings, data: DataDir, counts: dict[str, Any] | None = None) -> Path | None:
    """Write a new release of the accepted samples; None when nothing changed since the last.

    Parent shards whose rows are all unchanged are hard-linked into the new release (no copy,
    same bytes, same hash); the other rows go to new shards, in the images' storage order, so
    samples added since the parent fill new shards and leave the parent's reusable. With
    `release.max_per_prompt_group`, the samples past the cap are held back (surd.stages.groups)."""
    accepted = _accepted(settings, data)
    cap = settings.release.max_per_prompt_group
    existing = releases(data)
    parent_dir = existing[-1] if existing else None
    parent = manifest(parent_dir) if parent_dir else None
    everything = _fingerprint(*accepted)  # before any prompt is read: a no-op stops here
    same_columns = parent_dir is not None and parent is not None and _same_schema(parent_dir, parent)
    if not everything or (same_columns and _unchanged(parent, everything, cap)):
        return None  # nothing changed (a release with other columns is remade with these)
    rows, held = cap_groups(accepted_rows(settings, data, accepted), cap)
    del accepted  # held as Arrow columns from here
    fingerprint = {sid: everything[sid] for sid in rows.column("sample_id").to_pylist()}
    version = f"v{len(existing) + 1:04d}"
    data.releases_dir.mkdir(parents=True, exist_ok=True)
    for stale in data.releases_dir.glob(".tmp-*"):
        shutil.rmtree(stale)  # the caller holds the release lock: a temp folder's writer is dead
    tmp = data.releases_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    shards: list[dict[str, Any]] = []
    reused_ids: set[str] = set()
    if parent is not None and parent_dir is not None:
        by_file = {sh["file"]: sh for sh in parent["shards"]}
        for file, ids in _reusable(parent_dir, parent, fingerprint):
            name = f"shard-{len(shards):05d}.parquet"
            os.link(parent_dir / file, tmp / name)
            shards.append({**by_file[file], "file": name, "reused_from": f"{parent['release']}/{file}"})
            reused_ids.update(ids)
    fresh = rows.filter(
        pc.invert(pc.is_in(rows.column("sample_id"), pa.array(sorted(reused_ids), pa.string())))
    )
    for entry in write_shards(data, fresh, tmp, len(shards), settings.release):
        shards.append(entry)
        fault_point("release", len(shards))
    man = _manifest(version, parent, fingerprint, shards) | {
        "inputs": _inputs(everything, cap),
        "max_per_prompt_group": cap,
        "held_back": {HELD_BACK: sorted(held.column("sample_id").to_pylist())} if cap else {},
        "prompt_groups": group_sizes(rows),
        "counts": counts or {},
        "model_ids": _model_ids(data),
        "settings": settings.provenance(),
    }
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1, sort_keys=True))
    fault_point("release_manifest", 1)  # a kill here leaves a temp folder with a manifest in it
    write_card(tmp, man, rows)
    fault_point("release_card", 1)
    os.replace(tmp, data.releases_dir / version)
    return data.releases_dir / version


def _manifest(
    version: str, parent: dict[str, Any] | None, fingerprint: dict[str, str], shards: list[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest's identity, contents and lineage: what it holds against its parent."""
    before = set(parent["fingerprint"]) if parent else set()
    return {
        "release": version,
        "created_at": datetime.now(UTC).isoformat(),
        "schema_version": SCHEMA_VERSION,
        "code_version": __version__,
        "columns": RELEASE.names,
        "code": code_identity(),
        "rows": len(fingerprint),
        "shards": shards,
        "parent": parent["release"] if parent else None,
        "added": sorted(set(fingerprint) - before),
        "removed": sorted(before - set(fingerprint)),
        "changed": sorted(
            i for i in set(fingerprint) & before if parent and parent["fingerprint"][i] != fingerprint[i]
        ),
        "fingerprint": fingerprint,
    }


def _model_ids(data: DataDir) -> dict[str, list[str]]:
    out = {}
    for name in ("captions", "clip_scores"):
        ids = {p.get("model_id") for p in data.table(name).provenance()}
        out[name] = sorted(i for i in ids if i)
    return out


def verify(path: Path) -> list[str]:
    """Recompute every shard's hash and row count; returns the problems found (empty = sound)."""

    return verify_files(str(path), manifest(path)["shards"])


def storage_options(settings: Settings) -> dict[str, Any]:
    r = settings.release
    opts: dict[str, Any] = {}
    if r.endpoint_url:
        opts["endpoint_url"] = r.endpoint_url
    if r.access_key:
        opts["key"] = r.access_key.get_secret_value()
    if r.secret_key:
        opts["secret"] = r.secret_key.get_secret_value()
    return opts
