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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.layout import DataDir
from storage.outbox import Entry, Outbox
from storage.provenance import code_identity
from storage.releases import highest_number, manifest, releases, verify_files
from storage.schemas import RELEASE_BASE, SCHEMA_VERSION
from storage.tables import fault_point
from surd import __version__, chain
from surd.review import outcome, queue
from surd.settings import Settings
from surd.sources import LICENCE_NOTES, REGISTRY, generation
from surd.sources.safety import source_level
from surd.stages import prompt_label, recheck, splits, takedown
from surd.stages.card import write_card
from surd.stages.groups import HELD_BACK, cap_groups, group_sizes, prompt_group
from surd.stages.release_review import review_of_release
from surd.stages.shards import reusable, shard_name, write_shards

RAW_COLUMNS = ("complex_prompt", "negative_prompt", "source", "source_item_id", "source_url")


DECIDED = ("sample_id", "decision_id", "decided_by_kind", "simple_prompt", "caption")  # → _accepted
NOT_RAW = (*DECIDED[1:], "prompt_profanity", "split", "split_reason")
FROM_RAW = pa.schema([f for f in RELEASE_BASE if f.name not in ("image", "sha256", *NOT_RAW)])


def schema() -> pa.Schema:
    """A release's schema: its own columns and every declared stage's (surd.chain)."""
    return chain.PIPELINE.release_schema()


def row_schema() -> pa.Schema:
    """A release's columns but the image and its hash (which stream in from the images table)."""
    return pa.schema([f for f in schema() if f.name not in ("image", "sha256")])


BATCH = 4096  # raw items made Python objects at once


def _aligned(tables: list[pa.Table], ids: pa.ChunkedArray, missing: str) -> pa.Table:
    """Lookup results put in sample-id order, checked to hold exactly the (sorted) `ids`."""
    found = pa.concat_tables(tables, promote_options="permissive").sort_by("sample_id") if tables else None
    if found is None or len(found) != len(ids) or not found.column("sample_id").equals(ids):
        short = len(ids) - (len(found) if found is not None else 0)
        raise RuntimeError(f"{short} accepted samples have no {missing}; no release written")
    return found


def _accepted(settings: Settings, data: DataDir) -> pa.Table:
    """Every standing accept with its caption, in sample-id order: sample_id, decision_id,
    decided_by_kind, simple_prompt (the steward's edit, else the caption), caption and row_key
    (`_row_key`). Arrow columns, aligned by sorting: no Python object per accepted sample."""
    engine = queue.connect(settings.review_database_url)
    try:
        acc = outcome.accepted(engine).sort_by("sample_id")
    finally:
        engine.dispose()
    ids = acc.column("sample_id")
    if len(acc):
        caption = _aligned(list(data.table("captions").select(ids, ["simple_prompt"])), ids, "caption")
        caption = caption.column("simple_prompt")
    else:  # nothing accepted (yet): the same columns, empty
        caption = pa.chunked_array([], pa.string())
    edited = acc.column("edited")
    simple = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(edited), 0), False), edited, caption)
    keys = [
        _row_key({"simple_prompt": s, "decision_id": d})
        for s, d in zip(simple.to_pylist(), acc.column("decision_id").to_pylist(), strict=True)
    ]
    return (
        acc.drop_columns(["edited"])
        .append_column("simple_prompt", simple)
        .append_column("caption", caption)
        .append_column("row_key", pa.array(keys, pa.string()))
    )


def _from_raw(r: dict[str, Any]) -> dict[str, Any]:
    """A release row's columns that come from its raw item (meta_json parsed, then dropped)."""
    return {
        "sample_id": r["sample_id"],
        **{k: r[k] for k in RAW_COLUMNS},
        "prompt_group": prompt_group(r["complex_prompt"]),
        "licence_note": LICENCE_NOTES.get(r["source"], ""),
        **REGISTRY[r["source"]].generation(r),
        "safety_level": source_level(r["nsfw_level"]),
    }


def accepted_rows(settings: Settings, data: DataDir, accepted: pa.Table | None = None) -> pa.Table:
    """The release rows of the accepted samples, in sample-id order, without their images:
    `write_shards` streams those in (bytes and sha256) from the images table. The raw items and
    CLIP scores are looked up as Arrow columns and aligned with the decisions by sorting; only a
    batch of raw items at a time becomes Python objects (to parse each source's generation
    metadata), so neither the raw metadata nor an object per row is held for every sample."""
    acc = accepted if accepted is not None else _accepted(settings, data)
    if not len(acc):
        return row_schema().empty_table()
    ids = acc.column("sample_id")
    made = []
    for part in data.table("raw_items").select(ids, [*RAW_COLUMNS, *generation.READS]):
        for start in range(0, len(part), BATCH):
            raws = part.slice(start, BATCH).to_pylist()
            made.append(pa.Table.from_pylist([_from_raw(r) for r in raws], FROM_RAW))
    raw = _aligned(made, ids, "raw item")
    del made
    column = {n: acc.column(n) for n in DECIDED} | {n: raw.column(n) for n in FROM_RAW.names}
    column["prompt_profanity"] = prompt_label.scores(raw.column("complex_prompt"))
    flat = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    for table, col in chain.PIPELINE.release_columns():  # what each declared stage adds
        column[col.name] = col.values(data, table, flat)
    column["split"] = column["split_reason"] = pa.nulls(len(flat), pa.string())  # set below
    rows = row_schema()
    table = pa.table([column[n] for n in rows.names], schema=rows)
    split, reason, _ = splits.assign(table, settings.release)
    return table.set_column(rows.get_field_index("split"), "split", split).set_column(
        rows.get_field_index("split_reason"), "split_reason", reason
    )


def _row_key(row: dict[str, Any]) -> str:
    """What makes a released row the same row: its simple prompt and the decision behind it."""
    return hashlib.sha1(f"{row['simple_prompt'] or ''}\x1f{row['decision_id']}".encode()).hexdigest()


def _same_schema(folder: Path, man: dict[str, Any]) -> bool:
    """Whether a release was written with today's columns and types (else it is remade)."""
    if man.get("columns") != schema().names:
        return False
    return not man["shards"] or pq.read_schema(folder / man["shards"][0]["file"]).equals(schema())


def _inputs(fingerprint: dict[str, str], cap: int | None, removed: dict[str, str] | None = None) -> str:
    """What a release is made from: every accepted sample's key, the per-group cap, and the items
    found deleted upstream (their removal alone makes a new release)."""
    made_of: list[Any] = [fingerprint, cap]
    if removed:
        made_of.append(sorted(removed))
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()


def create_release(
    settings: Settings, data: DataDir, counts: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
) -> Path | None:
    """Write a new release of the accepted samples; None when nothing changed since the last.
    `counts` (the stages' counts, for the manifest) may be a function: called only when a release
    is written, so a no-op does not count every table.

    Parent shards whose rows are all unchanged are hard-linked into the new release (no copy,
    same bytes, same hash); the other rows go to new shards, in the images' storage order, so
    samples added since the parent fill new shards and leave the parent's reusable. With
    `release.max_per_prompt_group`, the samples past the cap are held back (surd.stages.groups)."""
    gone = takedown.covered(settings, data)  # {sample id: takedown id}
    upstream = recheck.removed(data)  # {sample id: evidence}: deleted at their source
    accepted, withdrawn, stopped = _releasable(settings, data, gone, upstream)
    cap = settings.release.max_per_prompt_group
    existing = releases(data)
    parent_dir = existing[-1] if existing else None
    parent = manifest(parent_dir) if parent_dir else None
    ids = accepted.column("sample_id").to_pylist()
    everything = dict(zip(ids, accepted.column("row_key").to_pylist(), strict=True))
    del ids  # a no-op stops below, before any raw item is read
    upstream = {sid: why for sid, why in upstream.items() if parent and sid in parent["fingerprint"]}
    inputs = _inputs(everything, cap, upstream)
    same_columns = parent_dir is not None and parent is not None and _same_schema(parent_dir, parent)
    if not everything or (same_columns and parent is not None and parent.get("inputs") == inputs):
        return None  # nothing changed (a release with other columns is remade with these)
    rows, held = cap_groups(accepted_rows(settings, data, accepted), cap)
    del accepted
    fingerprint = (
        everything if cap is None else {sid: everything[sid] for sid in rows.column("sample_id").to_pylist()}
    )
    version = f"v{highest_number(data) + 1:04d}"  # pruned and quarantined numbers stay unused
    data.releases_dir.mkdir(parents=True, exist_ok=True)
    for stale in data.releases_dir.glob(".tmp-*"):
        shutil.rmtree(stale)  # the caller holds the release lock: a temp folder's writer is dead
    tmp = data.releases_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    shards = _shards(settings, data, rows, tmp, parent_dir, parent, fingerprint)
    man = _manifest(version, parent, fingerprint, shards) | {
        "inputs": inputs,
        "max_per_prompt_group": cap,
        "held_back": ({HELD_BACK: sorted(held.column("sample_id").to_pylist())} if cap else {})
        | ({takedown.REASON: withdrawn} if withdrawn else {})
        | _by_reason(stopped),
        "removed_reasons": _removed_reasons(parent, fingerprint, gone, held)
        | {sid: why for sid, why in stopped.items() if parent and sid in parent["fingerprint"]},
        "prompt_groups": group_sizes(rows),
        "splits": splits.counts(rows.column("split")),
        "decontaminated": splits.explain(rows, settings.release),
        "counts": (counts() if callable(counts) else counts) or {},
        "model_ids": _model_ids(data) | {"prompt_profanity": [prompt_label.scorer()]},
        "settings": settings.provenance(),
    }
    man |= review_of_release(data, tmp, parent_dir, man, settings)
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1, sort_keys=True))
    fault_point("release_manifest", 1)  # a kill here leaves a temp folder with a manifest in it
    write_card(tmp, man, rows)
    fault_point("release_card", 1)
    if not man.get("held"):  # announced once (storage.outbox), recorded before the rename
        Outbox(data.root).record(Entry(version, man["inputs"], datetime.now(UTC).isoformat()))
    os.replace(tmp, data.releases_dir / version)
    return data.releases_dir / version


def _shards(
    settings: Settings,
    data: DataDir,
    rows: pa.Table,
    tmp: Path,
    parent_dir: Path | None,
    parent: dict[str, Any] | None,
    fingerprint: dict[str, str],
) -> list[dict[str, Any]]:
    """Parent shards whose rows are all unchanged (and in the same split) hard-linked in; the other
    rows written to new shards of their split, in the images' storage order."""
    shards: list[dict[str, Any]] = []
    reused_ids: set[str] = set()
    taken: dict[str, int] = {}
    if parent is not None and parent_dir is not None:
        by_file = {sh["file"]: sh for sh in parent["shards"]}
        split_now = dict(
            zip(rows.column("sample_id").to_pylist(), rows.column("split").to_pylist(), strict=True)
        )
        for file, split, ids in reusable(parent_dir, parent, fingerprint, split_now, schema()):
            name = shard_name(split, taken.get(split, 0))
            taken[split] = taken.get(split, 0) + 1
            os.link(parent_dir / file, tmp / name)
            entry = {
                **by_file[file],
                "file": name,
                "split": split,
                "reused_from": f"{parent['release']}/{file}",
            }
            shards.append(entry)
            reused_ids.update(ids)
    fresh = (  # a filter copies every column: only when some rows are in reused shards
        rows.filter(pc.invert(pc.is_in(rows.column("sample_id"), pa.array(sorted(reused_ids), pa.string()))))
        if reused_ids
        else rows
    )
    for entry in write_shards(data, fresh, tmp, taken, settings.release, schema()):
        shards.append(entry)
        fault_point("release", len(shards))
    return shards


def _releasable(
    settings: Settings, data: DataDir, gone: dict[str, int], upstream: dict[str, str]
) -> tuple[pa.Table, list[str], dict[str, str]]:
    """The accepted samples a release may hold; those taken down since they were accepted; and
    {id: why} of those that no longer went through every declared stage (one dropped them since: a
    stage added to the pipeline, or a data root from an older version; or one has yet to decide)
    or that were deleted at their source (`source_removed`)."""
    accepted = _accepted(settings, data)
    taken = pc.is_in(accepted.column("sample_id"), pa.array(sorted(gone), pa.string()))
    withdrawn = accepted.filter(taken).column("sample_id").to_pylist()
    accepted = accepted.filter(pc.invert(taken)) if withdrawn else accepted
    stopped = _stopped(data, accepted.column("sample_id"))
    for sid in pc.filter(
        accepted.column("sample_id"),
        pc.is_in(accepted.column("sample_id"), pa.array(sorted(upstream), pa.string())),
    ).to_pylist():
        stopped[sid] = recheck.REASON
    if stopped:
        out = pc.is_in(accepted.column("sample_id"), pa.array(sorted(stopped), pa.string()))
        accepted = accepted.filter(pc.invert(out))
    return accepted, withdrawn, stopped


def _stopped(data: DataDir, ids: pa.ChunkedArray) -> dict[str, str]:
    """{sample id: why} of the accepted samples that did not go on through every declared stage:
    the reason of the first stage that dropped it (the part before ':'), or `pending` while a
    stage has yet to decide it."""
    outside = pc.invert(pc.is_in(ids, value_set=chain.PIPELINE.went_on(data)))
    ids = ids.filter(outside).combine_chunks() if pc.any(outside).as_py() else pa.array([], pa.string())
    if not len(ids):
        return {}
    drops = chain.PIPELINE.first_drop(data, ids)
    return {sid: drops[sid][1].split(":")[0] if sid in drops else "pending" for sid in ids.to_pylist()}


def _by_reason(stopped: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sid, why in sorted(stopped.items()):
        out.setdefault(why, []).append(sid)
    return out


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
        "columns": schema().names,
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


def _removed_reasons(
    parent: dict[str, Any] | None, fingerprint: dict[str, str], gone: dict[str, int], held: pa.Table
) -> dict[str, str]:
    """Why each row of the parent is not in this release: `takedown:<id>`, the prompt-group cap,
    or `not_accepted` (a steward or policy changed its decision)."""
    capped = set(held.column("sample_id").to_pylist())
    out = {}
    for sid in sorted(set(parent["fingerprint"]) - set(fingerprint) if parent else ()):
        if sid in gone:
            out[sid] = takedown.reason(gone[sid])
        else:
            out[sid] = HELD_BACK if sid in capped else "not_accepted"
    return out


def _model_ids(data: DataDir) -> dict[str, list[str]]:
    """The models of every declared stage that ran one, by its table."""
    out = {}
    for name in chain.PIPELINE.names():
        ids = {p.get("model_id") for p in data.table(name).provenance()}
        if ids - {None}:
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
