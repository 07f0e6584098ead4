"""Announcing releases: every release made (by the rebuild or release flow, `surd release create`, a
takedown's remake) leads to exactly one `surd.release.published`, which the `embed` deployment's
trigger waits for.

Making a release records it in the data root's outbox (storage.outbox). `announce` sends what the
outbox holds, under its lock: each event gets an id derived from the data root, the version and
what the release was made from, so Prefect stores it once and its triggers fire once even if it
were sent again; an entry leaves the outbox only once the server returns the event. Without a
Prefect API (a release made from the command line on a machine with no server configured) the
entry waits for the next scheduled `release` flow, which announces it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from storage import locks
from storage.layout import DataDir
from storage.outbox import Entry, Outbox
from storage.releases import manifest
from surd.settings import Settings

EVENT = "surd.release.published"
NAMESPACE = uuid.UUID("5f1d3c2e-8a4b-4e55-9b7e-2f5a7c1e9d40")  # this project's event ids


def event_id(root: Path, entry: Entry) -> uuid.UUID:
    """The same release of the same data root always gets the same event id."""
    return uuid.uuid5(NAMESPACE, f"{EVENT}:{root.resolve()}:{entry.release}:{entry.inputs}")


def _stored(client: Any, eid: uuid.UUID) -> bool:
    from datetime import UTC, datetime

    from prefect.events.filters import EventFilter, EventIDFilter, EventNameFilter, EventOccurredFilter

    since = datetime(2020, 1, 1, tzinfo=UTC)
    page = client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=[EVENT]),
            id=EventIDFilter(id=[eid]),
        ),
        limit=1,
    )
    return bool(page.events)


def payload(path: Path) -> dict[str, Any]:
    man = manifest(path)
    return {
        "release": man["release"],
        "path": str(path),
        "rows": man["rows"],
        "counts": man.get("counts", {}),
        "inputs": man.get("inputs"),
    }


def announce(settings: Settings, confirm_s: float = 60.0) -> list[str]:
    """Send every pending release announcement once; returns the releases announced now. A
    release whose folder is not in place yet stays pending; an entry whose version now holds
    another release is set aside, never sent."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    data = DataDir(settings.data_root)
    box = Outbox(data.root)
    if not box.pending():
        return []
    done: list[str] = []
    with (
        locks.writing(Path(settings.data_root), "outbox", settings.lock_wait_s),
        get_client(sync_client=True) as client,
    ):
        for entry in box.pending():
            path = data.releases_dir / entry.release
            if not (path / "manifest.json").exists():
                continue  # its writer is at work, or was killed before the rename: later
            if manifest(path).get("inputs") != entry.inputs:
                box.drop(entry)
                continue
            eid = event_id(data.root, entry)
            if not _stored(client, eid):
                emit_event(
                    event=EVENT,
                    resource={"prefect.resource.id": f"surd.release.{entry.release}"},
                    payload=payload(path),
                    id=eid,
                )
                deadline = time.monotonic() + confirm_s
                while not _stored(client, eid):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the Prefect server has not confirmed {EVENT} for {entry.release} within "
                            f"{confirm_s:.0f} s; it stays in the outbox, to be sent by the next release flow"
                        )
                    time.sleep(0.5)
            box.sent(entry)
            done.append(entry.release)
    return done


def pending(settings: Settings) -> list[str]:
    """The releases whose announcement waits in the outbox."""
    return [e.release for e in Outbox(Path(settings.data_root)).pending()]
