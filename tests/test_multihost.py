"""Past one machine: a real `dask scheduler` and two `dask worker` processes (the CLI, as an operator
starts them on other hosts), each in its own network namespace, and a Prefect server the workers
report to. Over one data root (the namespaces share the filesystem, as hosts share an NFS mount)
the images stage's parts are fetched and decoded on the workers, the captions and CLIP stages run
there in partitions, and so do a release's embeddings; every table and vector equals what a single
process makes. This is the project's one test of "Dask equals one process"."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from surd import chain
from tests.conftest import free_port
from tests.netns import Hosts
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

SPREAD = ("captions", "clip_scores")  # the stages the issue names; both `scale = "partitions"`
ON_CLUSTER = ("images", *SPREAD)  # images: its parts fetched and decoded there (`scale = "parts"`)


@pytest.fixture(scope="module")
def hosts() -> Any:
    h = Hosts.make(["scheduler", "worker-1", "worker-2"])
    if not h.isolated:
        print(f"multi-host test on loopback, without namespaces ({h.why})", file=sys.stderr)
    yield h
    h.close()


def _rows(root: Path, table: str) -> list[dict[str, Any]]:
    t = chain.PIPELINE.data_dir(root).table(table).read()
    return sorted(t.to_pylist(), key=lambda r: r["sample_id"])


def _wait_for_workers(address: str, n: int, procs: list[Any], logs: list[Path]) -> None:
    from distributed import Client

    deadline = time.monotonic() + 180
    while True:
        try:
            with Client(address, timeout=10) as client:
                client.wait_for_workers(n, timeout=60)
                return
        except (OSError, TimeoutError) as exc:
            dead = [p for p in procs if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, (exc, [log.read_text()[-1500:] for log in logs])
            time.sleep(1)


def test_images_captions_clip_and_embeddings_on_dask_workers_on_other_hosts_equal_one_process(
    hosts: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.scale import embed as embed_on_cluster
    from flows.scale import run as run_on_cluster
    from storage.embeddings import EmbeddingStore, read_layer
    from surd import chain, pipeline
    from surd.app.demo import demo_config
    from surd.config import load_settings
    from surd.sources.replay import ReplaySite

    replay = ReplaySite().start(host=hosts.this)  # on the bridge: the workers fetch images from it

    server = PrefectServer(tmp_path / "prefect", free_port(), host=hosts.this).start()
    sched = f"tcp://{hosts.addresses['scheduler']}:{free_port()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SURD_")},
        "PREFECT_API_URL": server.url,  # the workers report their task runs here, across the bridge
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    dask = str(Path(sys.executable).parent / "dask")
    port = sched.rsplit(":", 1)[1]
    logs = [tmp_path / f"{h}.log" for h in hosts.names]
    procs = [
        hosts.popen(
            "scheduler",
            [dask, "scheduler", "--host", hosts.addresses["scheduler"], "--port", port, "--no-dashboard"],
            logs[0],
            env,
        )
    ]
    for name, log in zip(hosts.names[1:], logs[1:], strict=True):
        argv = [dask, "worker", sched, "--name", name, "--nworkers", "1", "--nthreads", "1"]
        argv += ["--host", hosts.addresses[name], "--no-dashboard", "--memory-limit", "4GB"]
        procs.append(hosts.popen(name, argv, log, env))
    try:
        _wait_for_workers(sched, 2, procs, logs)
        with temporary_settings({PREFECT_API_URL: server.url}):
            monkeypatch.setenv("PREFECT_API_URL", server.url)
            roots: dict[str, tuple[Any, dict[str, Any], Any]] = {}
            for name, scale in (("single", {}), ("cluster", {"dask_address": sched, "partitions": 4})):
                cfg = demo_config(tmp_path / name, replay) | {"scale": scale, "embed": {"llm": "tiny"}}
                s = load_settings(**cfg)
                for source in s.sources.enabled:
                    pipeline.crawl(s, source)
                runs = {}
                for stage in chain.PIPELINE.names():
                    out = scale and stage in ON_CLUSTER
                    runs[stage] = run_on_cluster(cfg, s, stage) if out else pipeline.run(s, stage)
                pipeline.review(s)
                release = pipeline.release(s)
                assert release
                emb = embed_on_cluster(cfg, s, release, None) if scale else pipeline.embed(s, release)
                roots[name] = (s, runs, emb)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        server.stop()
        replay.stop()
    (one, single, emb_one), (many, spread, emb_many) = roots["single"], roots["cluster"]
    assert single["images"].dropped
    if hosts.isolated:  # the cluster's images were fetched by the workers, from their own addresses
        fetched = {ip for ip, path in replay.clients if path.startswith("/img/")}
        assert {hosts.addresses["worker-1"], hosts.addresses["worker-2"]} <= fetched, fetched
    a, b = single["images"], spread["images"]
    assert (a.processed, a.kept, a.dropped) == (b.processed, b.kept, b.dropped) and a.processed > 0
    ia, ib = _rows(one.data_root, "images"), _rows(many.data_root, "images")
    assert [(r["sample_id"], r["status"], r["reason"], r["sha256"]) for r in ia] == [
        (r["sample_id"], r["status"], r["reason"], r["sha256"]) for r in ib
    ]
    assert emb_one.embedded == emb_many.embedded > 0 and emb_one.model_id == emb_many.model_id
    va, _ = read_layer(EmbeddingStore(pipeline.open_data(one), emb_one.model_id).dir, -1)
    vb, _ = read_layer(EmbeddingStore(pipeline.open_data(many), emb_many.model_id).dir, -1)
    assert va.keys() == vb.keys()
    for sid in va:  # other partitions, other batches: float16 vectors within a rounding step
        np.testing.assert_allclose(va[sid], vb[sid], rtol=2**-10, atol=2**-14)
    for n in SPREAD:
        assert chain.PIPELINE.stage_class(n).scale == "partitions"
        a, b = single[n], spread[n]
        assert (a.processed, a.kept, a.dropped) == (b.processed, b.kept, b.dropped) and a.processed > 0, n
        assert b.partitions == 4
        ran_on = {w.split()[0] for w in b.workers}
        assert ran_on == {"worker-1", "worker-2"}, b.workers  # both hosts took partitions
        if hosts.isolated:
            assert {w.split()[1].split("//")[1].rsplit(":", 1)[0] for w in b.workers} == {
                hosts.addresses["worker-1"],
                hosts.addresses["worker-2"],
            }
        ta, tb = _rows(one.data_root, n), _rows(many.data_root, n)
        assert [(r["sample_id"], r["status"], r["reason"]) for r in ta] == [
            (r["sample_id"], r["status"], r["reason"]) for r in tb
        ], n
        for x, y in zip(ta, tb, strict=True):
            for k, v in x.items():
                if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float)):
                    np.testing.assert_allclose(v, y[k], atol=1e-3, err_msg=f"{n} {k}")
                elif k != "model_id":
                    assert v == y[k], (n, x["sample_id"], k)
