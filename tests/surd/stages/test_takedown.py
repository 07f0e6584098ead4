"""Takedowns: recorded with who and when, enforced by the crawl, every stage, the review and the
release; superseded releases that still hold taken-down rows are pruned only after confirmation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from storage.releases import manifest, releases
from surd import chain, pipeline
from surd.config import load_settings
from surd.ids import sample_id
from surd.review import queue
from surd.review import takedowns as log
from surd.sources.replay import ReplaySite
from surd.stages.release import verify
from surd.stages.takedown import Matcher, normal_url, resolve
from surd.status import status
from tests import forkserver

SURD = str(Path(sys.executable).parent / "surd")


def surd(root: Path, *args: str, stdin: str | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {"SURD_DATA_ROOT": str(root), "SURD_PROFILE": "tiny", "SURD_DEVICE": "cpu"}
    if stdin is None:
        return forkserver.surd(*args, env=env, timeout=300)
    return subprocess.run([SURD, *args], env=env, input=stdin, capture_output=True, text=True, timeout=300)


def test_a_matcher_names_items_by_id_creator_and_url() -> None:
    m = Matcher.of(
        [
            {"id": 1, "kind": "sample", "source": None, "value": "abc123"},
            {"id": 2, "kind": "item", "source": "lexica", "value": "77"},
            {"id": 3, "kind": "creator", "source": "civitai", "value": "Cooler_Rider"},
            {"id": 4, "kind": "url", "source": None, "value": "HTTPS://Example.com/img/9/#top"},
        ]
    )
    assert m and m.needs_raw
    assert m.match({"sample_id": "abc123"}) == 1
    assert m.match({"sample_id": sample_id("lexica", "77")}) == 2
    civ = {"sample_id": "x", "source": "civitai", "meta_json": '{"username": "cooler_rider"}'}
    assert m.match(civ) == 3  # as the site shows the name, in any case
    assert m.match({**civ, "meta_json": '{"username": "someone"}'}) is None
    assert m.match({"sample_id": "y", "image_url": "https://example.com/img/9"}) == 4
    assert normal_url("https://EXAMPLE.com/a/?q=1#f") == "https://example.com/a?q=1"
    assert not Matcher.of([]) and not Matcher.of([{"id": 1, "kind": "sample", "value": "a"}]).needs_raw


@pytest.mark.slow  # the CLI in subprocesses
def test_a_takedown_with_a_bad_target_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    chain.PIPELINE.data_dir(root).open()
    for args, says in [
        (["--creator", "nosite:bob"], "--creator takes SOURCE:NAME"),
        (["--item", "civitai:"], "--item takes SOURCE:ITEM_ID"),
        (["--url", "ftp://x/y"], "--url takes an http(s) URL"),
        (["--sample", "a", "--url", "https://x/y"], "give exactly one of"),
    ]:
        run = surd(root, "takedown", "add", *args, "--reason", "asked")
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert surd(root, "takedown", "list").stdout.strip() == "no takedowns"


def test_a_taken_down_sample_is_dropped_by_the_image_stage_unfetched(demo_settings, replay) -> None:
    s = demo_settings.model_copy(update={"crawl": demo_settings.crawl.model_copy(update={"limit": 25})})
    pipeline.crawl(s, "civitai")
    data = chain.PIPELINE.data_dir(s.data_root)
    raw = [r for r in data.table("raw_items").iter_rows() if r["status"] == "ok"]
    victim = raw[3]
    engine = queue.connect(s.review_database_url)
    entry = log.add(engine, "sample", victim["sample_id"], "the creator asked", "test", "mail 2026-11-30")
    engine.dispose()
    before = len(replay.requests)
    pipeline.images(s)
    fetched = {path for _, path in replay.requests[before:]}
    images = data.table("images").lookup([r["sample_id"] for r in raw], ["status", "reason", "image"])
    assert images[victim["sample_id"]]["reason"] == f"takedown:{entry['id']}"
    assert images[victim["sample_id"]]["image"] is None
    assert not any(victim["image_url"].endswith(p) for p in fetched)  # never fetched
    assert len(images) == len(raw)  # every other item decided as before: nothing lost
    assert status(s, data)["stages"]["images"]["dropped"]["takedown"] == 1


@pytest.fixture
def site() -> ReplaySite:
    """The replay site, with one more Civitai item by the creator of a released sample on a
    later page (the recorded objects, renamed at the network boundary)."""
    site = ReplaySite()
    site._civitai[60]["username"] = "Cooler_Rider"
    site.start()
    yield site
    site.stop()


@pytest.mark.slow  # the CLI in subprocesses
def test_a_creator_taken_down_after_a_release(tmp_path: Path, site: ReplaySite) -> None:
    from surd.app.demo import demo_config

    cfg: dict[str, Any] = demo_config(tmp_path / "data", site)
    s = load_settings(**{**cfg, "crawl": {**cfg["crawl"], "limit": 25}})
    pipeline.crawl(s, "civitai")
    pipeline.run_all(s)
    pipeline.review(s)
    v1 = Path(pipeline.release(s))
    rows = pq.read_table(v1 / manifest(v1)["shards"][0]["file"], columns=["sample_id", "creator"]).to_pylist()
    theirs = [r["sample_id"] for r in rows if r["creator"] == "Cooler_Rider"]
    assert theirs, "the recorded data releases one sample of this creator"

    root = Path(s.data_root)
    add = surd(root, "takedown", "add", "--creator", "civitai:Cooler_Rider", "--reason", "creator asked",
               "--requested-by", "them@example.com")  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert "takedown 1 recorded" in add.stdout and f"{len(theirs)} rows of {v1.name} go" in add.stdout
    listed = surd(root, "takedown", "list").stdout
    assert "creator civitai:Cooler_Rider  reason: creator asked  requested by: them@example.com" in listed

    # the next crawl meets a new item of theirs: its id only is kept, its image never fetched
    full = load_settings(**cfg)
    before = len(site.requests)
    assert pipeline.crawl(full, "civitai", full=True).taken_down == 1  # the new one
    pipeline.run_all(full)
    pipeline.review(full)
    data = chain.PIPELINE.data_dir(root)
    gone = [r for r in data.table("raw_items").iter_rows() if str(r["reason"]).startswith("takedown:")]
    new = [r for r in gone if r["sample_id"] not in theirs]
    assert len(new) == 1 and {r["sample_id"] for r in gone} == {*theirs, new[0]["sample_id"]}
    for r in gone:  # the new item as crawled, the earlier ones as the takedown scrubbed them:
        assert r["image_url"] is None and r["complex_prompt"] is None and r["meta_json"] is None
    token = site._civitai[60]["url"].split("/")[4]  # the image's uuid, in every rendition's URL
    fetched = [p for _, p in site.requests[before:] if p.startswith("/img/civitai/")]
    assert fetched and not any(token in p for p in fetched)

    v2 = Path(pipeline.release(full))
    man = manifest(v2)
    assert v2.name == "v0002" and not set(theirs) & set(man["fingerprint"])
    assert set(theirs) <= set(man["removed"])
    assert {man["removed_reasons"][sid] for sid in theirs} == {"takedown:1"}
    assert verify(v1) == [] and verify(v2) == []
    card = (v2 / "README.md").read_text()
    assert "## Removing your content" in card and "Taken down since the previous release: 1 rows." in card
    st = status(full, data)["stages"]
    assert st["raw_items"]["dropped"]["takedown"] == len(theirs) + 1
    # counted once, where it first drops them (the scrubbed raw rows); the queue's rejection of the
    # released one lies outside what went on, and the review's counts still add up
    assert (
        st["review"]["outside"] == len(theirs) and "rejected_by_auto:takedown" not in st["review"]["dropped"]
    )
    r = st["review"]
    assert r["in"] == r["out"] + sum(r["dropped"].values()) + r["pending"]

    # prune: only after a yes, recorded; the release that replaces it must be clean itself
    refused = surd(root, "release", "prune", "--superseded-by", "v0001")
    assert refused.returncode == 2 and "v0001 still holds 1 taken-down rows" in refused.stderr
    no = surd(root, "release", "prune", "--superseded-by", "v0002", stdin="n\n")
    assert no.returncode == 130 and v1.exists(), no.stderr
    assert "v0001: 1 taken-down rows" in no.stderr
    yes = surd(root, "release", "prune", "--superseded-by", "v0002", stdin="y\n")
    assert yes.returncode == 0 and "pruned v0001" in yes.stdout, yes.stderr
    assert not v1.exists() and [p.name for p in releases(data)] == ["v0002"] and verify(v2) == []
    engine = queue.connect(full.review_database_url)
    try:
        pruned = log.prunes(engine)
        assert [(p["release"], p["superseded_by"], p["taken_down_rows"]) for p in pruned] == [
            ("v0001", "v0002", 1)
        ]
        assert resolve(Matcher.of(log.entries(engine)), data).keys() >= set(theirs)
    finally:
        engine.dispose()
    assert pipeline.release(full) == str(v2)  # nothing changed: no new release, none reused


def _queued(s, sample_id: str) -> dict:
    from surd.review.schema import items

    engine = queue.connect(s.review_database_url)
    try:
        with engine.connect() as conn:
            q = sa.select(items.c.payload, items.c.prompts).where(items.c.sample_id == sample_id)
            return dict(conn.execute(q).mappings().one())
    finally:
        engine.dispose()


@pytest.mark.slow  # a whole demo path and an export: 11 s
def test_a_takedown_removes_the_stored_bytes_and_lists_the_exports(
    reviewed_settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image bytes, prompts and CLIP embedding of a taken-down item leave every table file at
    once (its rows stay, as drops naming the takedown); an export made before is named."""
    from surd.app.cli import main
    from surd.exports import export_release

    s = reviewed_settings
    v1 = Path(pipeline.release(s))
    victim = sorted(manifest(v1)["fingerprint"])[0]
    data = chain.PIPELINE.data_dir(s.data_root)
    image = data.table("images").lookup([victim], ["image"])[victim]["image"]
    assert image and len(image) > 1000
    caption = data.table("captions").lookup([victim], ["simple_prompt"])[victim]["simple_prompt"]
    assert caption and caption.lower() in _queued(s, victim)["prompts"]
    export_release(v1, tmp_path / "exported", "imagefolder")
    monkeypatch.setenv("SURD_DATA_ROOT", str(s.data_root))
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    with pytest.raises(SystemExit) as done:
        main(["takedown", "add", "--sample", victim, "--reason", "the creator asked", "--json"])
    assert done.value.code in (0, None)
    said = json.loads(capsys.readouterr().out)
    assert said["exports_holding_it"] == [str((tmp_path / "exported").resolve())]
    assert said["rows_emptied"]["images"] == 1 and said["rows_emptied"]["review_queue"] == 1
    tables = [p for p in (Path(s.data_root) / "tables").rglob("*") if p.is_file()]
    assert tables and not any(image in p.read_bytes() for p in tables)  # not one table file holds it
    for name in chain.PIPELINE.tables:  # every table's row of it: the ids and the takedown only
        [row] = data.table(name).select(pa.array([victim]), data.table(name).schema.names)
        row = row.to_pylist()[0]
        assert (row["status"], row["reason"]) == ("dropped", f"takedown:{said['id']}"), name
        kept = {"sample_id", "status", "reason", "source", "source_item_id"}
        assert all(v is None for k, v in row.items() if k not in kept), (name, row)
    st = status(s, data)["stages"]
    assert all(
        st[n]["in"] == st[n]["out"] + sum(st[n]["dropped"].values()) + st[n]["pending"]
        for n in ("images", "captions")
    )
    queued = _queued(s, victim)  # the review queue's copy: neither the prompts nor their search text
    assert json.loads(queued["payload"]) == {"sample_id": victim}
    assert caption.lower() not in (queued["prompts"] or ""), queued
    assert pipeline.scrub_takedowns(s) == {}  # done once; a rerun rewrites nothing
    v2 = Path(pipeline.release(s))
    assert victim not in manifest(v2)["fingerprint"]
