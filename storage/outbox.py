"""Announcements not yet confirmed sent: an outbox of one file per release under
`<data root>/state/outbox/`, so that every release made, by whatever command, is announced once.

Whoever makes a release records it here before the release folder is renamed into place (so a kill
between the two leaves an entry whose release is missing, never a release without an entry);
whoever can announce it (a Prefect API is configured) sends each pending entry and moves it to
`sent/` once the receiver has it. An entry is keyed by the release's version and the hash of what
it was made from, so a version remade with other contents is another entry. Only a holder of the
data root's `outbox` lock sends (storage.locks): two senders never send one entry twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from storage.tables import atomic_write_bytes


@dataclass(frozen=True)
class Entry:
    """A release to announce: its version, what it was made from (the manifest's `inputs`), and
    when it was recorded."""

    release: str
    inputs: str
    recorded_at: str

    @property
    def key(self) -> str:
        return f"{self.release}-{self.inputs[:16]}"


class Outbox:
    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "state" / "outbox"

    def record(self, entry: Entry) -> Path:
        path = self.dir / f"{entry.key}.json"
        atomic_write_bytes(path, json.dumps(asdict(entry), sort_keys=True).encode())
        return path

    def pending(self) -> list[Entry]:
        """Entries not yet sent, oldest release first."""
        if not self.dir.exists():
            return []
        found = [Entry(**json.loads(p.read_text())) for p in self.dir.glob("*.json")]
        return sorted(found, key=lambda e: (e.release, e.recorded_at))

    def sent(self, entry: Entry) -> None:
        """Mark an entry sent (confirmed received): it moves to `sent/`, kept as the record."""
        done = self.dir / "sent"
        done.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir / f"{entry.key}.json", done / f"{entry.key}.json")

    def drop(self, entry: Entry) -> None:
        """An entry whose release was never made (a kill before the rename, then another release
        took the version): moved to `stale/`, never sent."""
        stale = self.dir / "stale"
        stale.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir / f"{entry.key}.json", stale / f"{entry.key}.json")

    def was_sent(self, entry: Entry) -> bool:
        return (self.dir / "sent" / f"{entry.key}.json").exists()
