"""Deleting superseded releases that hold taken-down rows, locally and where they were published,
once a newer release without them exists; each deletion is recorded in the review database."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from typing import Any

from storage.layout import DataDir
from storage.releases import list_published, manifest, releases
from surd.review import queue
from surd.review import takedowns as log
from surd.settings import Settings
from surd.stages import takedown


@dataclass
class Prunable:
    release: str
    taken_down_rows: int
    locations: list[str]  # the local folder, and the published copy if there is one


def prunable(settings: Settings, data: DataDir, superseded_by: str, **storage: Any) -> list[Prunable]:
    """The releases older than `superseded_by` that hold rows a takedown covers. ValueError when
    `superseded_by` is not a release or still holds such rows itself (create a release first)."""
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
    for name, path in found.items():
        if name >= superseded_by:
            continue
        rows = sum(1 for sid in manifest(path)["fingerprint"] if sid in gone)
        if rows:
            where = [str(path)]
            if location and name in published:
                where.append(f"{location.rstrip('/')}/{name}")
            out.append(Prunable(name, rows, where))
    return out


def prune(
    settings: Settings, data: DataDir, superseded_by: str, doomed: list[Prunable], actor: str, **storage: Any
) -> None:
    """Delete the given releases (from `prunable`) and record each deletion. A local release is
    renamed out of sight first (a reader never sees a half-deleted one); hard-linked shards that a
    newer release shares stay in that release."""
    import fsspec  # object stores: only when a published copy is deleted

    engine = queue.connect(settings.review_database_url)
    try:
        for p in doomed:
            for where in p.locations:
                if where.startswith(str(data.releases_dir)):
                    hidden = data.releases_dir / f".pruned-{p.release}-{uuid.uuid4().hex[:8]}"
                    (data.releases_dir / p.release).rename(hidden)
                    shutil.rmtree(hidden)
                else:
                    fs, path = fsspec.core.url_to_fs(where, **storage)
                    fs.rm(path, recursive=True)
                log.record_prune(engine, p.release, superseded_by, where, p.taken_down_rows, actor)
    finally:
        engine.dispose()
