"""A production rehearsal: the stack as shipped (tests/stack.py: PostgreSQL, a Prefect server, the
rendered prefect.yaml deployed, one worker per pool, the review server) against the replay site.

The scheduled rebuild is run by hand; the GPU stages are shown to run on the `gpu` pool's worker
(the rebuild hands them to the `stages/gpu` deployment). Stewards decide through the review
server; a release made from the command line is announced and trained and evaluated. New posts
appear on the site; the next rebuild makes one new release, trained once, and leaves every table
free of duplicates with counts that add up. The one difference from production: the
`gpu` worker runs on the CPU with the tiny models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from surd import chain
from surd.sources.replay import ReplaySite
from tests.stack import Stack

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`


@pytest.fixture
def site() -> Any:
    s = ReplaySite()
    s.withhold_newest(20)  # posted later: the second rebuild finds them at the top of the feed
    s.start()
    yield s
    s.stop()


def _config(root: Path, site: ReplaySite) -> dict[str, Any]:
    from surd.app.demo import demo_config

    cfg = demo_config(root, site)
    cfg["crawl"]["contact_url"] = "mailto:surd-rehearsal@lab.test"  # an operator's, not the project's
    cfg["review"] = {"session_secret": "4f" * 32, "audit_share": 0.0}  # stewards decide (policy none)
    cfg["embed"] = {"llm": "tiny"}
    cfg["adapter"].update(steps=10, checkpoint_every=10, eval_prompts_per_suite=1, eval_images_per_prompt=1)
    return cfg


def test_production_rehearsal(tmp_path: Path, site: ReplaySite) -> None:
    root = tmp_path / "data"
    stack = Stack(tmp_path, _config(root, site))
    try:
        stack.start()
        _rehearse(stack, root, site)
    finally:
        stack.stop()


def _rehearse(stack: Stack, root: Path, site: ReplaySite) -> None:
    # 1. the scheduled rebuild, run now: CPU stages on `cpu`, the GPU stages on `gpu`'s worker
    with stack.client() as c:
        rebuild = c.read_deployment_by_name("rebuild/rebuild")
    assert rebuild.schedules[0].schedule.cron == "0 3 * * 1" and rebuild.work_pool_name == "cpu"
    first = stack.start_run("rebuild/rebuild")
    [run] = stack.finished("rebuild/rebuild", 1)
    assert run.id == first and run.state_type.value == "COMPLETED", stack.log("worker-cpu")
    assert run.work_pool_name == "cpu"
    [gpu_run] = stack.finished("stages/gpu", 1)
    assert gpu_run.work_pool_name == "gpu" and gpu_run.state_type.value == "COMPLETED"
    gpu_stages = {s.name for s in chain.PIPELINE if s.pool == "gpu"}
    assert {"captions", "clip_scores"} <= gpu_stages  # the GPU work the issue names, and more
    assert set(stack.task_runs(gpu_run.id)) == gpu_stages  # run there, and only there
    on_cpu = stack.task_runs(run.id)
    assert "images" in on_cpu and not gpu_stages & set(on_cpu)
    assert not (root / "releases").exists() or not list((root / "releases").glob("v*"))  # none accepted yet

    # 2. a steward accepts through the review server; a release made from the command line trains
    made = stack.surd(
        "review",
        "add-steward",
        "alice",
        "--role",
        "admin",
        "--token",
        env={"SURD_NEW_STEWARD_PASSWORD": "a-long-enough-password"},
    )
    token = made.stdout.split("API token (shown once):", 1)[1].split()[0]
    api = httpx.Client(base_url=stack.review_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    items = api.post("/api/claim", json={"n": 12}).json()["items"]
    assert len(items) == 12
    for it in items:
        assert (
            api.post("/api/decide", json={"sample_id": it["sample_id"], "decision": "accept"}).status_code
            == 200
        )
    created = stack.surd("release", "create", "--json")
    info = json.loads(created.stdout)
    assert info["created"] and info["release"] == "v0001" and info["announced"] == ["v0001"], created.stderr
    trained = {d: stack.finished(f"{d}/{d}", 1) for d in ("embed", "train", "evaluate")}
    assert all(
        r.state_type.value == "COMPLETED" and r.work_pool_name == "gpu" for rs in trained.values() for r in rs
    )
    assert trained["embed"][0].parameters["release"] == str(root / "releases" / "v0001")
    [report] = root.glob("runs/v0001-*/eval/report.md")
    assert report.read_text().startswith("# SUR-adapter evaluation")
    with stack.client() as c:  # the training losses reach the flow's log
        assert any("loss" in rec.message and "simple" in rec.message for rec in c.read_logs())

    # 3. new posts at the top of the feed; the next rebuild, with the demo's policy deciding, makes a
    # release that is trained once (two rebuilds at once are tests/test_chaos.py's: whole snapshots)
    site.publish_withheld()
    policy = {"config": {"review": {"auto_policy": "demo-margin-v1", "auto_min_margin": 0.5}}}
    second = stack.start_run("rebuild/rebuild", policy)
    runs = stack.finished("rebuild/rebuild", 2)
    assert {r.id: r.state_type.value for r in runs if r.id == second} == {second: "COMPLETED"}
    releases = sorted(p.name for p in (root / "releases").glob("v*"))
    assert releases == ["v0001", "v0002"], releases
    for d in ("embed", "train", "evaluate"):  # every release trained, each once
        done = stack.finished(f"{d}/{d}", len(releases))
        assert len(done) == len(releases) and all(r.state_type.value == "COMPLETED" for r in done), d
    embedded = sorted(r.parameters["release"] for r in stack.finished("embed/embed", len(releases)))
    assert embedded == [str(root / "releases" / v) for v in releases]
    again = json.loads(stack.surd("release", "create", "--json").stdout)
    assert again["created"] is False  # the latest holds everything the two runs accepted
    for table in (root / "tables").iterdir():
        ids = [
            i for p in sorted(table.glob("part-*.parquet")) for i in pq.read_table(p).column(0).to_pylist()
        ]
        assert len(ids) == len(set(ids)), f"duplicate keys in {table.name}"
    status = json.loads(stack.surd("status", "--json").stdout)["stages"]
    for name in [*chain.PIPELINE.tables, "review"]:
        c = status[name]
        assert c["in"] == c["out"] + sum(c["dropped"].values()) + c["pending"] and c["pending"] >= 0, (
            name,
            c,
        )
    assert status["raw_items"]["in"] > 60  # the new posts were crawled
    verified = stack.surd("release", "verify").stdout.split()  # every release by default
    assert verified == ["v0001:", "ok", "v0002:", "ok"]
