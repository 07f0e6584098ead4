"""The demo path end to end: under Prefect's test harness, and killed with SIGKILL in every stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from surd import chain
from tests import forkserver
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

STAGES = [*chain.PIPELINE.tables, "review", "release"]


def check_counts_add_up(stages: dict) -> None:
    for name in STAGES:
        s = stages[name]
        assert s["in"] > 0 and s["out"] > 0, name
        assert s["in"] == s["out"] + sum(s["dropped"].values()) + s["pending"], name
        # only the review stage may have pending items: the ones left to stewards
        assert s["pending"] == 0 or name == "review", name
    assert stages["review"]["pending"] == stages["review"]["queued"] - stages["review"]["out"] - sum(
        stages["review"]["dropped"].values()
    )
    [emb] = stages["embeddings"].values()
    assert emb["out"] == stages["release"]["out"] and emb["pending"] == 0


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_demo_flow_under_prefect(prefect_api, tmp_path: Path, replay) -> None:
    from flows.rebuild import rebuild
    from surd.app.demo import demo_config

    cfg = demo_config(tmp_path / "data", replay)
    cfg["adapter"]["eval_prompts_per_suite"] = 1  # the 45 prompts' protocol is tests/adapter's to check
    out = rebuild(config=cfg, train=True)
    stages = out["status"]["stages"]
    check_counts_add_up(stages)
    assert stages["images"]["dropped"]  # the replay site's broken images have their reasons
    assert stages["review"]["dropped"]  # the demo policy rejected some, recorded as auto
    assert all(k.startswith("rejected_by_auto:") for k in stages["review"]["dropped"])
    assert Path(out["evaluate"]["report"]).read_text().startswith("# SUR-adapter evaluation")
    card = (Path(out["release"]) / "README.md").read_text()
    assert f"{stages['release']['out']} samples" in card
    published = _events("surd.release.published")
    assert [e.resource.id for e in published] == ["surd.release.v0001"]
    assert published[0].payload["rows"] == stages["release"]["out"]
    # the flow never waits for stewards: the band the demo policy leaves is open, and shown
    q = out["review"].queue
    assert q["remaining"] == stages["review"]["pending"] and q["accepted"] == stages["review"]["out"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["review-queue"]))
        )
    assert len(arts) == 1 and f"| {q['items']} | {q['final']} | {q['accepted']} |" in arts[0].data
    with get_client(sync_client=True) as client:
        losses = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["adapter-training-losses"]))
        )
    [table] = losses
    logged = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["step"] for r in logged][-1] == 20 and all(r["loss"] > 0 for r in logged)
    with get_client(sync_client=True) as client:
        prog = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["images-progress", "captions-progress"])
            )
        )
        [counts] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["rebuild-counts"]))
        )
    assert {a.key for a in prog} == {"images-progress", "captions-progress"} and all(
        float(a.data) == 100.0 for a in prog
    )
    table = json.loads(counts.data) if isinstance(counts.data, str) else counts.data
    # the artifact says what `surd status` says now
    from surd.config import load_settings
    from surd.pipeline import open_data
    from surd.status import status

    settings = load_settings(**demo_config(tmp_path / "data", replay))
    now = status(settings, open_data(settings))["stages"]
    for row in table:
        st = now[row["stage"]]
        assert (row["in"], row["out"], row["pending"]) == (st["in"], st["out"], st["pending"]), row["stage"]
    report = json.loads((Path(out["evaluate"]["report"]).parent / "report.json").read_text())
    assert report["pairs"] == 3 * 2 and "clip_similarity" in report["t_tests"]
    # every artifact names the code that made it: this checkout's commit
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    man = json.loads((Path(out["release"]) / "manifest.json").read_text())
    [ckpt] = (tmp_path / "data" / "runs").glob("*/ckpt-000020")
    [emb] = (tmp_path / "data" / "embeddings").glob("*/meta.json")
    for made in (man, json.loads((ckpt / "config.json").read_text()), json.loads(emb.read_text()), report):
        assert made["code"]["commit"] == head and made["code"]["dirty"] in (True, False)
    assert f"at commit {head[:12]}" in card
    assert (
        chain.PIPELINE.data_dir(tmp_path / "data").table("captions").provenance()[0]["code"]["commit"] == head
    )
    assert set(report["prompt_origins"]) == {"action", "color", "counting"}


def _rows(root: Path, table: str) -> list[dict]:

    t = chain.PIPELINE.data_dir(root).table(table).read()
    return sorted(
        t.drop([c for c in ("model_id",) if c in t.column_names]).to_pylist(), key=lambda r: r["sample_id"]
    )


def test_a_failed_crawl_fails_its_task_and_the_rebuild(prefect_api, tmp_path: Path, replay) -> None:
    """One site down, another answering with Cloudflare's 403 challenge: each one's crawl task fails
    (after its retries), the third source and the stages still run over what there is, and the flow
    run ends failed, naming each source, reason and URL."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.rebuild import rebuild
    from surd.app.demo import demo_config
    from surd.sources.replay import ReplaySite
    from surd.stages.crawl import CrawlFailed

    blocking = ReplaySite().start()
    challenge = (403, {"cf-mitigated": "challenge"}, b"<html><title>Just a moment...</title></html>", 0.0)
    blocking.script("/lexica/api/v1/search", *[challenge] * 40)  # every try of every task retry
    down, blocked = f"http://127.0.0.1:{free_port()}", blocking.source_urls()["lexica"]
    cfg = demo_config(tmp_path / "data", replay)
    src = cfg["sources"]
    cfg["sources"] = src | {
        "civitai": src["civitai"] | {"base_url": down},
        "lexica": src["lexica"] | {"base_url": blocked},
    }
    try:
        state = rebuild(config=cfg, train=False, return_state=True)
    finally:
        blocking.stop()
    failure = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(failure, CrawlFailed)
    assert f"crawl civitai failed: connection_error at {down}" in str(failure)
    assert "crawl lexica failed: blocked at " in str(failure) and blocked in str(failure)
    with get_client(sync_client=True) as client:
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = {r.name: r.state_type.value for r in client.read_task_runs(flow_run_filter=this_run)}
    assert runs["crawl-civitai"] == runs["crawl-lexica"] == "FAILED" and runs["crawl-sdonline"] == "COMPLETED"
    assert runs["images"] == "COMPLETED", runs  # the declared stages ran over what there is


def _events(name: str, wait_s: float = 30.0) -> list:
    """Events as the Prefect server stored them (they arrive asynchronously)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
            if page.events or time.monotonic() > deadline:
                return page.events
            time.sleep(0.5)


RESUME_RTOL = 1e-5  # float32 after at most 10 optimizer steps resumed in another process
RESUME_ATOL = 1e-6


def _demo(root: Path, port: int, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env["SURD_ADAPTER__EVAL_PROMPTS_PER_SUITE"] = "1"  # 6 pairs, not 90: the resume is the point here
    if kill_at:
        env["SURD_FAULT_KILL_AT"] = kill_at
    argv = ["demo", "--engine", "local", "--data-root", str(root), "--replay-port", str(port)]
    return forkserver.surd(*argv, env=env, timeout=600)


def _status(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env["SURD_DATA_ROOT"] = str(root)
    out = forkserver.surd("status", "--json", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    st.pop("data_root")
    return st


@pytest.mark.slow
def test_sigkill_in_every_stage_then_resume(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    port = free_port()
    for point in [
        "raw_items:2",
        "crawl_pages:3",
        "images:2",
        "captions:2",
        "clip_scores:2",
        "near_duplicates:2",  # two of its three parts written; the index is rebuilt from them
        "review:10",
        "release:1",
        "release_manifest:1",  # the manifest is written, the folder not yet renamed
        "release_card:1",
        "embeddings_tmp:1",
        "embeddings:2",
        "checkpoint:10",
        "metrics:15",  # metrics lines past the last checkpoint, to be rewritten on resume
        "checkpoint_written:20",  # the last checkpoint's files written, its folder not yet renamed
        "evaluation:3",  # images of three pairs written, in the evaluation's temp folder
        "evaluation_report:1",  # every file written, the folder not yet in place
    ]:
        run = _demo(killed, port, point)
        assert run.returncode == -signal.SIGKILL, f"{point} was never reached:\n{run.stdout[-2000:]}"
    assert _demo(killed, port).returncode == 0
    assert _demo(clean, free_port()).returncode == 0
    st_killed, st_clean = _status(killed), _status(clean)
    # every stage's counts agree; the crawl history differs by design (each rerun after a finished
    # crawl makes an incremental pass, which logs its own pages)
    assert st_killed["stages"] == st_clean["stages"]
    check_counts_add_up(st_clean["stages"])
    for table in (killed / "tables").iterdir():
        ids = [
            i for p in sorted(table.glob("part-*.parquet")) for i in pq.read_table(p).column(0).to_pylist()
        ]
        assert len(ids) == len(set(ids)), f"duplicate ids in {table.name}"
    for name, cols in (
        ("raw_items", ["sample_id", "status", "reason", "complex_prompt"]),
        ("images", ["sample_id", "status", "reason", "sha256", "duplicate_of"]),
        ("captions", ["sample_id", "status", "simple_prompt"]),
        ("clip_scores", ["sample_id", "status", "p_simple"]),
        ("near_duplicates", ["sample_id", "status", "reason", "similarity"]),
    ):
        tables = [
            sorted(tuple(r.values()) for r in pq.read_table(root / "tables" / name, columns=cols).to_pylist())
            for root in (killed, clean)
        ]
        assert tables[0] == tables[1], name
    man = [json.loads((r / "releases" / "v0001" / "manifest.json").read_text()) for r in (killed, clean)]
    assert man[0]["fingerprint"] == man[1]["fingerprint"]
    assert not (killed / "releases" / "v0002").exists()
    # no reader took a killed writer's temp folder for a release, nor built a run on one
    assert not list((killed / "releases").glob(".tmp-*"))
    assert [p.name.split("-")[0] for p in (killed / "runs").iterdir()] == ["v0001"]
    # Training resumed from a checkpoint runs its later steps in a new process, whose kernels may
    # sum in another order (seen with OMP_NUM_THREADS=1: one ulp of a loss at step 14, 1.2e-7 in
    # the weights after 20 steps): float32 results are compared within RESUME_RTOL / RESUME_ATOL,
    # everything else (steps, pairs, which side, files) exactly.
    from safetensors.torch import load_file

    weights = [
        load_file(str(sorted((r / "runs").glob("*/ckpt-000020/adapter.safetensors"))[0]))
        for r in (killed, clean)
    ]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[1]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=RESUME_RTOL, atol=RESUME_ATOL)
    metrics = [
        [json.loads(m) for m in next((r / "runs").glob("*/metrics.jsonl")).read_text().splitlines()]
        for r in (killed, clean)
    ]
    assert [m["step"] for m in metrics[0]] == [m["step"] for m in metrics[1]] == list(range(1, 21))
    for a, b in zip(*metrics, strict=True):  # the same losses, step for step
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=RESUME_RTOL) for k in a)
    reports = [json.loads(next((r / "runs").glob("*/eval/report.json")).read_text()) for r in (killed, clean)]
    assert reports[0]["pairs"] == reports[1]["pairs"] > 0
    pairs = [
        [json.loads(x) for x in next((r / "runs").glob("*/eval/pairs.jsonl")).read_text().splitlines()]
        for r in (killed, clean)
    ]
    for a, b in zip(*pairs, strict=True):  # the same pairs; CLIP's preference within the tolerance
        score = "clip_choice_adapter"
        assert {k: v for k, v in a.items() if k != score} == {k: v for k, v in b.items() if k != score}
        assert a[score] == pytest.approx(b[score], rel=1e-3, abs=1e-4)  # images of weights 1e-7 apart
    assert not [p for p in (killed / "runs").glob("*/.*")]  # no temp or old evaluation folder left


def test_a_held_release_is_announced_only_once_approved(prefect_api, released_copy: Path) -> None:
    """The gate holds a release (its site region-blocked): nothing announces it; once a person
    approves it, it is announced once (each announcement starts one embed → train → evaluate: the
    rehearsal shows that chain on the workers), and never again."""
    from flows.events import announce
    from surd import pipeline
    from surd.app.demo import demo_config
    from surd.config import load_settings
    from surd.review import queue
    from surd.sources.replay import ReplaySite

    site = ReplaySite().start()
    try:
        s = load_settings(**demo_config(released_copy, site))
        assert announce(s) == ["v0001"]  # the session's first release, never announced there
        engine = queue.connect(s.review_database_url)
        try:  # a steward's accept: a release is due
            [item] = queue.claim(engine, "alice", 1, 600, queue.Filters())
            for who in ("alice", "bob"):
                queue.decide(engine, item["sample_id"], who, "accept")
        finally:
            engine.dispose()
        site.fault("civitai", "region_blocked")
        with pytest.raises(Exception, match="region_blocked"):
            pipeline.crawl(s, "civitai")
        info = pipeline.release_info(s)
    finally:
        site.stop()
    assert set(info.held) == {"v0002"} and announce(s) == []  # held: not announced
    pipeline.approve(s, "v0002", "the block is known; the release is whole", "cli:alice")
    assert announce(s) == ["v0002"] and announce(s) == []
    sent = [e for e in _events("surd.release.published") if e.resource.id == "surd.release.v0002"]
    assert len(sent) == 1
