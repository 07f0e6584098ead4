"""`surd release prune` killed at every step of its deletions, then run again: no taken-down release
is left anywhere (the local folder, the published copy's manifest or shards), each deletion is
recorded once, and the release that replaces them is intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storage.releases import list_published, manifest
from surd import pipeline
from surd.config import load_settings
from surd.review import queue
from surd.review import takedowns as log
from tests import forkserver
from tests.conftest import through_review

pytestmark = pytest.mark.slow  # the CLI in subprocesses, killed: not in `make test-fast`


@pytest.fixture(scope="module")
def three_releases(tmp_path_factory: pytest.TempPathFactory, replay: Any) -> Path:
    """v0001 and v0002 hold a sample taken down since; v0003, made after, does not. All three
    are published to a folder (an object store's stand-in)."""
    from surd.app.demo import demo_config

    home = tmp_path_factory.mktemp("prune")
    cfg = demo_config(home / "data", replay) | {"release": {"location": str(home / "published")}}
    cfg["review"]["audit_share"] = 0.0  # one steward's accept settles an item
    s = load_settings(**cfg)
    through_review(s)
    v1 = pipeline.release_info(s)
    engine = queue.connect(s.review_database_url)
    try:
        [item] = queue.claim(engine, "alice", 1, 600, queue.Filters())  # one the policy left open
        queue.decide(engine, item["sample_id"], "alice", "accept")
        v2 = pipeline.release_info(s)
        victim = next(iter(manifest(Path(v1.path))["fingerprint"]))
        log.add(engine, "sample", victim, "the creator asked", "test", "mail")
    finally:
        engine.dispose()
    v3 = pipeline.release_info(s)
    assert (v1.release, v2.release, v3.release) == ("v0001", "v0002", "v0003")
    assert list_published(str(home / "published")) == ["v0001", "v0002", "v0003"]
    return home


def _prune(home: Path, kill_at: int | None) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {"SURD_DATA_ROOT": str(home / "data"), "SURD_RELEASE__LOCATION": str(home / "published")}
    if kill_at is not None:
        env["SURD_FAULT_KILL_AT"] = f"prune:{kill_at}"
    return forkserver.surd("release", "prune", "--superseded-by", "v0003", "--yes", env=env, timeout=300)


def test_a_prune_killed_at_any_step_finishes_on_the_next_run(three_releases: Path, tmp_path: Path) -> None:
    kills = 0
    for k in range(1, 40):
        home = tmp_path / f"k{k}"
        shutil.copytree(three_releases, home, symlinks=True)
        first = _prune(home, kill_at=k)
        if first.returncode == 0:
            assert k > 10, f"only {k - 1} steps to kill at"
            break  # past the last step: the run finished
        assert first.returncode == -signal.SIGKILL, first.stderr
        kills += 1
        again = _prune(home, kill_at=None)
        assert again.returncode == 0, again.stderr
        _nothing_taken_down_left(home)
    assert kills >= 10


def _nothing_taken_down_left(home: Path) -> None:
    releases = home / "data" / "releases"
    assert sorted(p.name for p in releases.iterdir()) == ["v0003"], list(releases.iterdir())
    assert sorted(p.name for p in (home / "published").iterdir()) == ["v0003"]  # no manifest, no shard
    s = load_settings(data_root=str(home / "data"))
    engine = queue.connect(s.review_database_url)
    try:
        done = sorted((p["release"], p["location"]) for p in log.prunes(engine))
    finally:
        engine.dispose()
    assert done == sorted(
        (r, where) for r in ("v0001", "v0002") for where in (str(releases / r), f"{home / 'published'}/{r}")
    ), done  # each deletion recorded once
    verify = subprocess.run(
        [sys.executable, "-m", "surd", "release", "verify"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SURD_")},
            "SURD_DATA_ROOT": str(home / "data"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and verify.stdout.strip() == "v0003: ok", verify.stderr
