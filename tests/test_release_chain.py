"""Release after release, on a replay site that changes between rebuilds as the live sites do
(surd.sources.replay_changes): frozen splits over rebuilds with new pages, decontamination of
planted evaluation prompts, items deleted upstream leaving (and a transient error removing
nothing), and a gate that holds a release each fault would spoil while clean rebuilds go out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from storage.outbox import Outbox
from storage.releases import held, manifest, published, read_columns, releases
from surd import pipeline
from surd.app.rebuild import rebuild
from surd.config import load_settings
from surd.review import queue
from surd.sources.replay import ReplaySite
from surd.stages.crawl import CrawlFailed
from tests.conftest import copy_root

pytestmark = pytest.mark.slow  # rebuilds of a data root, one after another: not in `make test-fast`

GROW = 12  # new posts at the top of Civitai's feed before each rebuild


def _config(root: Path, site: ReplaySite) -> dict[str, Any]:
    from surd.app.demo import demo_config

    cfg = demo_config(root, site)
    cfg["release"] = {"recheck": {"budget": 0, "confirm_after_s": 0.05}}  # no re-check unless asked
    return cfg


def _rebuild(s: Any) -> dict[str, Any]:
    try:
        return rebuild(s, train_adapter=False, log=lambda _: None)
    except CrawlFailed:  # a source down or blocked: the rest ran, and the release step with it
        return {}


def _splits(path: Path) -> dict[str, str]:
    t = read_columns(path, ["sample_id", "split"])
    return dict(zip(t.column("sample_id").to_pylist(), t.column("split").to_pylist(), strict=True))


@pytest.fixture(scope="module")
def site() -> Any:
    s = ReplaySite().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory, site: ReplaySite) -> Path:
    """A data root after five clean rebuilds, new posts on the site before each of the last four."""
    root = tmp_path_factory.mktemp("chain") / "data"
    s = load_settings(**_config(root, site))
    _rebuild(s)
    for _ in range(4):
        site.grow(GROW)
        _rebuild(s)
    return root


def test_five_clean_rebuilds_go_out_with_frozen_splits_that_no_group_straddles(chained: Path) -> None:
    data = pipeline.open_data(load_settings(data_root=str(chained)))
    made = releases(data)
    assert len(made) == 5 and all(not held(p) for p in made) and published(data) == made
    seen: dict[str, str] = {}
    for path in made:  # no sample ever changes split
        now = _splits(path)
        assert all(seen[sid] == sp for sid, sp in now.items() if sid in seen), path.name
        seen |= now
        groups = read_columns(path, ["prompt_group", "split"]).to_pylist()
        by_group: dict[str, set[str]] = {}
        for r in groups:
            by_group.setdefault(r["prompt_group"], set()).add(r["split"])
        assert all(len(v) == 1 for v in by_group.values()), path.name  # no group in two splits
        man = manifest(path)
        assert (path / "changes.parquet").exists() and (path / "stats.json").exists()
        assert sum(man["splits"].values()) == man["rows"]
    from datasets import load_dataset

    latest = made[-1]
    got = load_dataset(str(latest), cache_dir=str(chained.parent / "hf"))
    assert set(got) == {"train", "validation", "test"}
    assert {k: len(v) for k, v in got.items()} == manifest(latest)["splits"]
    assert manifest(latest)["rows"] > manifest(made[0])["rows"]  # the new pages reached the releases
    changes = pq.read_table(latest / "changes.parquet").to_pylist()
    assert {r["change"] for r in changes} <= {"added", "removed", "changed"} and changes


def _copy(chained: Path, tmp_path: Path, site: ReplaySite) -> Any:
    root = copy_root(chained, tmp_path / "data")
    return load_settings(**_config(root, site))


def _settle_one_open_item(s: Any) -> None:
    """A steward accepts one item the policy left open: the accepted set changes, a release is due."""
    engine = queue.connect(s.review_database_url)
    try:
        items = queue.claim(engine, "alice", 1, 600, queue.Filters())
        for it in items:
            queue.decide(engine, it["sample_id"], "alice", "accept")
            queue.decide(engine, it["sample_id"], "bob", "accept")  # an audit item needs two
    finally:
        engine.dispose()


FAULTS = [
    ("civitai", "null_prompts", "civitai"),
    ("civitai", "region_blocked", "region-blocked"),
    ("civitai", "sfw_only", "safe-for-work only"),
    ("sdonline", "no_prompts_parsed", "sdonline: its crawl found no prompt"),
    ("lexica", "null_prompts", "lexica: its crawl found no prompt"),
]


@pytest.mark.parametrize(("source", "fault", "says"), FAULTS)
def test_a_fault_at_a_source_holds_the_release_on_the_first_rebuild(
    chained: Path, tmp_path: Path, site: ReplaySite, source: str, fault: str, says: str
) -> None:
    s = _copy(chained, tmp_path, site)
    before = {p.name for p in releases(pipeline.open_data(s))}
    site.grow(GROW)
    _settle_one_open_item(s)
    site.fault(source, fault)
    try:
        _rebuild(s)
    finally:
        site.fault(source, None)
    data = pipeline.open_data(s)
    [new] = [p for p in releases(data) if p.name not in before]
    assert held(new), manifest(new).get("held")
    reasons = manifest(new)["held"]["reasons"]
    assert any(says in r for r in reasons), reasons
    assert new not in published(data) and new.name not in {e.release for e in Outbox(data.root).pending()}
    assert "Held by the release gate" in (new / "README.md").read_text()
    info = pipeline.release_info(s)
    assert info.path != str(new) and info.held == {new.name: reasons}  # what trains is the last one out


def test_an_approved_release_is_announced_once(chained: Path, tmp_path: Path, site: ReplaySite) -> None:
    s = _copy(chained, tmp_path, site)
    _settle_one_open_item(s)
    site.fault("civitai", "region_blocked")
    try:
        _rebuild(s)
    finally:
        site.fault("civitai", None)
    data = pipeline.open_data(s)
    new = releases(data)[-1]
    assert held(new)
    box = Outbox(data.root)
    assert new.name not in [e.release for e in box.pending()]  # held: nothing to announce
    with pytest.raises(ValueError, match="is not held"):
        pipeline.approve(s, published(data)[-1].name, "out already", "cli:alice")
    info = pipeline.approve(s, new.name, "the region block is known; the release is complete", "cli:alice")
    assert info.path == str(new) and not held(new) and info.held == {}
    assert [e.release for e in box.pending()].count(new.name) == 1  # announced once, by whoever sends
    from surd.review import takedowns

    engine = queue.connect(s.review_database_url)
    try:
        [logged] = takedowns.approvals(engine)
    finally:
        engine.dispose()
    assert logged["release"] == new.name and logged["actor"] == "cli:alice" and "region" in logged["held_for"]
    again = pipeline.release_info(s)  # nothing new: the approved release stays the one out
    assert again.path == str(new) and not again.created


EVAL_PLANTED = [
    "Seven vintage glass bottles.",  # a paper prompt, verbatim
    "seven VINTAGE glass-bottles!!",  # the same once normalised
    "a photo of giraffes eating trees at dawn, 8k, trending",  # a short paper prompt, whole
    "golden sun setting over a calm ocean with orange and pink hues, oil painting",  # 8 words shared
    "A chef tossing a pizza dough in the air in a kitchen, cinematic lighting",
    "Four freshly baked pies, food photography, warm light",
]


def test_planted_evaluation_prompts_never_reach_train(
    chained: Path, tmp_path: Path, site: ReplaySite
) -> None:
    s = _copy(chained, tmp_path, site)
    posts = site.grow(0, prompts=EVAL_PLANTED * 2)  # twice each: a group of two
    _rebuild(s)
    planted = {sample_for(p) for p in posts}
    engine = queue.connect(s.review_database_url)
    try:  # stewards accept what reached the queue, whatever the policy said
        for sid in planted:
            for who in ("alice", "bob"):
                try:
                    queue.decide(engine, sid, who, "accept")
                except queue.QueueError:
                    break  # not queued (a stage dropped it before review), or decided by then
    finally:
        engine.dispose()
    path = Path(pipeline.release(s))
    t = read_columns(path, ["sample_id", "split", "split_reason"])
    mine = t.filter(pc.is_in(t.column("sample_id"), value_set=__import__("pyarrow").array(sorted(planted))))
    assert len(mine) >= len(planted) // 2, "too few planted prompts reached the release to say anything"
    assert set(mine.column("split").to_pylist()) == {"test"}  # 100 % out of train
    assert all(r.startswith("decontaminated:") for r in mine.column("split_reason").to_pylist())
    man = manifest(path)
    assert man["decontaminated_rows"] >= len(mine) and set(man["decontaminated"]) <= planted
    card = (path / "README.md").read_text()
    assert f"Decontamination: {man['decontaminated_rows']} rows are in `test`" in card


def sample_for(post: dict[str, Any]) -> str:
    from surd.ids import sample_id

    return sample_id("civitai", str(post["id"]))


def test_items_deleted_upstream_leave_the_next_release(
    chained: Path, tmp_path: Path, site: ReplaySite
) -> None:
    s = _copy(chained, tmp_path, site)
    data = pipeline.open_data(s)
    latest = published(data)[-1]
    rows = read_columns(latest, ["sample_id", "source", "source_item_id"]).to_pylist()
    urls = data.table("raw_items").lookup([r["sample_id"] for r in rows], ["image_url"])
    rows = [r | urls[r["sample_id"]] for r in rows]
    civitai = [r for r in rows if r["source"] == "civitai"]
    doomed = civitai[: max(1, round(0.05 * len(rows)))]  # 5 % of the released items
    transient = civitai[len(doomed)]  # its image answers 503, every time, during the re-check
    site.delete("civitai", [r["source_item_id"] for r in doomed])
    path = "/" + transient["image_url"].split("/", 3)[3].split("?")[0]
    site.script(path, *[(503, {"Content-Type": "text/html"}, b"busy", 0.0)] * 50)
    # no civitai item API answer for the transient one either: it must stay present
    run = pipeline.recheck(s, budget=len(rows))  # the budget covers the whole release
    assert run.gone == len(doomed) and run.checked == len(rows), run
    _settle_one_open_item(s)
    _rebuild(s)
    new = published(pipeline.open_data(s))[-1]
    assert new != latest and not held(new)
    kept = set(_splits(new))
    gone = {r["sample_id"] for r in doomed}
    assert not gone & kept and transient["sample_id"] in kept
    changes = pq.read_table(new / "changes.parquet").to_pylist()
    removed = {r["sample_id"]: r["reason"] for r in changes if r["change"] == "removed"}
    assert {sid: removed.get(sid) for sid in gone} == dict.fromkeys(gone, "source_removed")
    st = json.loads(new.joinpath("stats.json").read_text())
    assert st["rows"] == manifest(new)["rows"]
    from surd.status import status

    assert status(s, pipeline.open_data(s))["source_removed"] == len(gone)
    shutil.rmtree(tmp_path / "data")
