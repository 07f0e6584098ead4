"""Deleting superseded releases that hold taken-down rows, locally and where they were published,
once a newer release without them exists; each deletion is recorded in the review database.

A prune is a recorded intent: what will be deleted (each release and each of its locations) is
written under `<data root>/state/prune/` before anything is deleted, and each location is marked
done once it is gone and its deletion recorded. Every prune first finishes the intents a killed
one left, so a kill at any step and a rerun leave no taken-down release anywhere (no local folder,
no published manifest or shard) and each deletion recorded once. A published copy loses its
manifest first, so no reader lists it while its shards go.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.layout import DataDir
from storage.releases import list_published, manifest, releases
from storage.tables import atomic_write_bytes, fault_point
from surd.review import queue
from surd.review import takedowns as log
from surd.settings import Settings
from surd.stages import takedown


@dataclass
class Prunable:
    release: str
    taken_down_rows: int
    locations: list[str]  # the local folder, and the published copy if there is one


@dataclass
class Intent:
    """A prune under way: the release, why, by whom, and which of its locations are gone."""

    release: str
    superseded_by: str
    taken_down_rows: int
    actor: str
    locations: list[str]
    done: list[str] = field(default_factory=list)
    planned_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def _intents_dir(data: DataDir) -> Path:
    return data.root / "state" / "prune"


def _save(data: DataDir, intent: Intent) -> None:
    atomic_write_bytes(_intents_dir(data) / f"{intent.release}.json", json.dumps(asdict(intent)).encode())


def pending(data: DataDir) -> list[Intent]:
    """Intents a prune recorded and has not finished (a killed prune's)."""
    folder = _intents_dir(data)
    if not folder.exists():
        return []
    return [Intent(**json.loads(p.read_text())) for p in sorted(folder.glob("v*.json"))]


class Steps:
    """The deletion steps one prune has taken: a kill test stops it at the n-th (fault_point)."""

    def __init__(self) -> None:
        self.taken = 0

    def __call__(self) -> None:
        self.taken += 1
        fault_point("prune", self.taken)


def prunable(settings: Settings, data: DataDir, superseded_by: str, **storage: Any) -> list[Prunable]:
    """The releases older than `superseded_by` that hold rows a takedown covers, wherever they
    are (the local folder, the published copy: either may be left by an older, interrupted prune).
    ValueError when `superseded_by` is not a release or still holds such rows itself."""
    found = {p.name: p for p in releases(data)}
    if superseded_by not in found:
        raise ValueError(f"no release {superseded_by!r}; releases: {', '.join(found) or 'none'}")
    gone = takedown.covered(settings, data)
    still = sum(1 for sid in manifest(found[superseded_by])["fingerprint"] if sid in gone)
    if still:
        raise ValueError(
            f"{superseded_by} still holds {still} taken-down rows: run `surd release create` for a "
            "release without them, then prune with it"
        )
    location = settings.release.location
    published = set(list_published(location, **storage)) if location else set()
    out = []
    for name in sorted(set(found) | published):
        if name >= superseded_by:
            continue
        man = manifest(found[name]) if name in found else _published_manifest(str(location), name, **storage)
        rows = sum(1 for sid in man["fingerprint"] if sid in gone)
        if rows:
            where = [str(found[name])] if name in found else []
            if location and name in published:
                where.append(f"{location.rstrip('/')}/{name}")
            out.append(Prunable(name, rows, where))
    return out


def _published_manifest(location: str, name: str, **storage: Any) -> dict[str, Any]:
    import fsspec  # object stores: only when a release is published

    fs, root = fsspec.core.url_to_fs(f"{location.rstrip('/')}/{name}/manifest.json", **storage)
    with fs.open(root, "rb") as fh:
        return json.loads(fh.read())  # type: ignore[no-any-return]


def prune(
    settings: Settings,
    data: DataDir,
    superseded_by: str,
    doomed: list[Prunable],
    actor: str,
    step: Steps | None = None,
    **storage: Any,
) -> None:
    """Record the intent to delete the given releases (from `prunable`), then carry it out;
    `step` counts the steps of the whole command (a finished interrupted prune's first)."""
    step = step or Steps()
    for p in doomed:
        _save(data, Intent(p.release, superseded_by, p.taken_down_rows, actor, list(p.locations)))
    step()
    finish(settings, data, step, **storage)


def finish(settings: Settings, data: DataDir, step: Steps | None = None, **storage: Any) -> list[str]:
    """Carry out every recorded intent to its end; returns the releases finished. Each location is
    deleted (again, if a kill came after), its deletion recorded once, then marked done."""
    step = step or Steps()
    intents = pending(data)
    if not intents:
        return []
    engine = queue.connect(settings.review_database_url)
    try:
        recorded = {(p["release"], p["location"]) for p in log.prunes(engine)}
        for intent in intents:
            for where in intent.locations:
                if where in intent.done:
                    continue
                _delete(data, intent.release, where, step, **storage)
                if (intent.release, where) not in recorded:
                    log.record_prune(
                        engine,
                        intent.release,
                        intent.superseded_by,
                        where,
                        intent.taken_down_rows,
                        intent.actor,
                    )
                    step()
                intent.done.append(where)
                _save(data, intent)
                step()
            done = _intents_dir(data) / "done"
            done.mkdir(parents=True, exist_ok=True)
            (_intents_dir(data) / f"{intent.release}.json").replace(done / f"{intent.release}.json")
    finally:
        engine.dispose()
    return [i.release for i in intents]


def _delete(data: DataDir, release: str, where: str, step: Steps, **storage: Any) -> None:
    """Delete one location of a release, whatever part of it a killed prune left."""
    if where.startswith(str(data.releases_dir)):
        local = data.releases_dir / release
        if local.exists():
            hidden = data.releases_dir / f".pruned-{release}-{uuid.uuid4().hex[:8]}"
            local.rename(hidden)  # out of sight at once: no reader lists a half-deleted release
            step()
        for left in data.releases_dir.glob(f".pruned-{release}-*"):
            shutil.rmtree(left)
        step()
        return
    import fsspec  # object stores: only when a published copy is deleted

    fs, path = fsspec.core.url_to_fs(where, **storage)
    if fs.exists(f"{path}/manifest.json"):
        fs.rm(f"{path}/manifest.json")  # unpublished first: no reader lists it any more
        step()
    if fs.exists(path):
        fs.rm(path, recursive=True)
    step()
