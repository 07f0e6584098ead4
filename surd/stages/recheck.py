"""Items deleted upstream leave: a polite re-check, at its source, of the items of the latest
release, a budget of them per rebuild (`release.recheck.budget`), in a fixed rotation so that the
whole release is covered over `rows / budget` rebuilds (the position is kept in
`state/recheck.json`).

An item is gone for good when its source says so (Civitai's lookup by id answers that there is no
such image; an SD Online item page answers 404 or 410), or when its image answers 404 or 410 twice,
`release.recheck.confirm_after_s` apart. A transient answer (a 5xx, 429, a timeout, a refused
connection) proves nothing and records nothing. A gone item is written to the `source_removed`
table with its evidence; the next release leaves it out (`source_removed` in its changes and
manifest), and `surd status` counts it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from storage.layout import DataDir
from storage.releases import manifest
from storage.schemas import DROPPED, STATUS_FIELDS
from storage.tables import PartTable
from surd.http.client import PoliteClient
from surd.http.errors import FetchError
from surd.settings import Settings
from surd.sources import REGISTRY
from surd.stages.crawl import politeness

TABLE = "source_removed"
REASON = "source_removed"
SCHEMA = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("evidence", pa.string()),  # item_gone | image_http_404_twice | …
        pa.field("checked_at", pa.timestamp("us", tz="UTC")),
        pa.field("release", pa.string()),  # the release whose items were re-checked
    ]
)
GONE_CODES = ("http_404", "http_410")


@dataclass
class RecheckRun:
    """What one re-check did: of the release, how many items it asked about and what it learnt."""

    release: str | None = None
    checked: int = 0
    present: int = 0
    gone: int = 0
    unknown: int = 0  # a transient answer: nothing recorded
    position: int = 0  # where the next re-check starts, in the rotation
    rows: int = 0  # the release's rows (covered over rows / budget rebuilds)
    evidence: dict[str, int] = field(default_factory=dict)


def table(data: DataDir) -> PartTable:
    return PartTable(data.tables_dir, TABLE, SCHEMA)


def removed(data: DataDir) -> dict[str, str]:
    """{sample id: evidence} of every item found gone at its source."""
    if not data.table_exists(TABLE):
        return {}
    t = table(data).read(["sample_id", "evidence"])
    return dict(zip(t.column("sample_id").to_pylist(), t.column("evidence").to_pylist(), strict=True))


def _rotation(ids: list[str]) -> list[str]:
    """A fixed order that mixes sources and ages: by a hash of the id."""
    return sorted(ids, key=lambda s: hashlib.sha1(s.encode()).hexdigest())


def _look(row: dict[str, Any], settings: Settings, client: PoliteClient) -> str:
    """`gone`, `missing` (the image 404/410: to confirm), `present` or `unknown`."""
    connector = REGISTRY[row["source"]]
    if connector.item_status is not None:
        said = connector.item_status(row, getattr(settings.sources, row["source"]), client)
        if said is not None:  # the source's own word on the item: final either way
            return said
    if not row.get("image_url"):
        return "unknown"
    try:
        client.get(str(row["image_url"]), expect="bytes")
    except FetchError as exc:
        return "missing" if exc.reason in GONE_CODES else "unknown"
    return "present"


def recheck(
    settings: Settings,
    data: DataDir,
    release: Any,
    budget: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RecheckRun:
    """Re-check the next `budget` items of `release` (a folder) at their sources."""
    budget = settings.release.recheck.budget if budget is None else budget
    man = manifest(release)
    order = _rotation(list(man["fingerprint"]))
    known = removed(data)
    order = [s for s in order if s not in known]
    run = RecheckRun(man["release"], rows=len(order))
    state = data.state("recheck")
    start = int(state.get("position", 0)) % len(order) if order else 0
    picked = (order[start:] + order[:start])[: min(budget, len(order))]
    raw = data.table("raw_items").lookup(picked, ["source", "source_item_id", "image_url", "source_url"])
    verdicts: dict[str, str] = {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for sid in picked:
        if sid in raw:
            by_source.setdefault(raw[sid]["source"], []).append(raw[sid])
    for source, rows in by_source.items():
        with PoliteClient(politeness(settings, source), sleep=sleep) as client:
            for row in rows:
                verdicts[row["sample_id"]] = _look(row, settings, client)
            missing = [r for r in rows if verdicts[r["sample_id"]] == "missing"]
            if missing:
                sleep(settings.release.recheck.confirm_after_s)
                for row in missing:  # the second look: a 404/410 again is gone, anything else is not
                    again = _look(row, settings, client)
                    verdicts[row["sample_id"]] = "gone_twice" if again in ("missing", "gone") else again
    now = datetime.now(UTC)
    gone: list[dict[str, Any]] = []
    for sid, v in verdicts.items():
        if v in ("gone", "gone_twice"):
            evidence = "item_gone" if v == "gone" else "image_http_404_twice"
            gone.append(
                {
                    "sample_id": sid,
                    "status": DROPPED,
                    "reason": f"{REASON}:{evidence}",
                    "evidence": evidence,
                    "checked_at": now,
                    "release": run.release,
                }
            )
            run.evidence[evidence] = run.evidence.get(evidence, 0) + 1
    if gone:
        table(data).write(gone, provenance={"stage": TABLE, "release": run.release})
    run.checked = len(verdicts)
    run.gone = len(gone)
    run.present = sum(v == "present" for v in verdicts.values())
    run.unknown = run.checked - run.gone - run.present
    run.position = (start + len(picked)) % len(order) if order else 0
    data.save_state("recheck", {"position": run.position, "release": run.release, "at": now.isoformat()})
    return run
