"""Chaos, as production meets it: two full rebuilds at once, a takedown killed half done then a
rebuild, a stage with pending work while a release is made, and a disk that fills during a stage
and during a release. Each ends with every table free of duplicate keys, counts that add up, and
(after the failure) a rerun that reaches the state a calm run reaches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from storage.releases import manifest
from surd import chain, pipeline
from surd.config import load_settings
from surd.review import queue
from tests import forkserver
from tests.conftest import through_review
from tests.stack import toml

pytestmark = pytest.mark.slow  # the CLI in subprocesses, killed, on small disks: not in `make test-fast`


def _env(root: Path, config: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    env |= {"SURD_DATA_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    if config is not None:
        env["SURD_CONFIG"] = str(config)
    return env | extra


def _surd(*argv: str, env: dict[str, str]) -> Any:
    """`surd argv` started in a process of its own (forked: tests/forkserver.py)."""
    return forkserver.surd_popen(*argv, env=env)


def _one_error(err: str) -> bool:
    """The failure said in one line (a model library's own warnings aside), no traceback."""
    return [ln.startswith("error: ") for ln in err.splitlines()].count(True) == 1 and "Traceback" not in err


def _finish(p: Any, timeout: float = 600) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _sound(root: Path, settings: Any) -> dict[str, Any]:
    """No duplicate key in any table; counts that add up; every release verified."""
    for table in (root / "tables").iterdir():
        ids = [
            i for p in sorted(table.glob("part-*.parquet")) for i in pq.read_table(p).column(0).to_pylist()
        ]
        assert len(ids) == len(set(ids)), f"duplicate keys in {table.name}"
        assert not list(table.glob(".tmp-*")), f"half-written part left in {table.name}"
    from surd.status import status

    st = status(settings, pipeline.open_data(settings))["stages"]
    for name in [*chain.PIPELINE.tables, "review"]:
        c = st[name]
        assert c["pending"] >= 0 and c["in"] == c["out"] + sum(c["dropped"].values()) + c["pending"], (
            name,
            c,
        )
    verify = forkserver.surd("release", "verify", env=_env(root))
    assert verify.returncode in (0, 3) and "error" not in verify.stdout, verify.stderr  # 3: none made yet
    return st


@pytest.fixture
def config(tmp_path: Path, replay: Any) -> tuple[Path, Any]:
    from surd.app.demo import demo_config

    cfg = demo_config(tmp_path / "data", replay)
    cfg["lock_wait_s"] = 600.0  # the second run waits for the first, however long it takes here
    cfg["review"]["audit_share"] = 0.0  # one steward's decision settles an item
    path = tmp_path / "surd.toml"
    path.write_text(toml(cfg))
    return path, load_settings(config_file=path)


def test_two_full_rebuilds_at_once(config: tuple[Path, Any]) -> None:
    path, s = config
    env = _env(s.data_root, path)
    runs = [_surd("rebuild", "--engine", "local", "--no-train", env=env) for _ in range(2)]
    results = [_finish(p) for p in runs]
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    _sound(Path(s.data_root), s)
    made = sorted(p.name for p in (Path(s.data_root) / "releases").glob("v*"))
    assert made in (["v0001"], ["v0001", "v0002"]), made  # each a whole snapshot of its moment
    # the latest holds everything accepted: a release made now finds nothing new
    again = forkserver.surd("release", "create", "--json", env=_env(s.data_root, path))
    assert again.returncode == 0 and json.loads(again.stdout)["created"] is False, again.stderr


def test_a_takedown_killed_half_done_then_a_rebuild(config: tuple[Path, Any]) -> None:
    path, s = config
    through_review(s)
    v1 = Path(pipeline.release(s))
    victim = sorted(manifest(v1)["fingerprint"])[0]
    data = pipeline.open_data(s)
    image = data.table("images").lookup([victim], ["image"])[victim]["image"]
    env = _env(s.data_root, path, SURD_FAULT_KILL_AT="takedown_scrub:1")
    code, _, err = _finish(_surd("takedown", "add", "--sample", victim, "--reason", "asked", env=env))
    assert code == -signal.SIGKILL, err  # killed with one table emptied of it, the others not yet
    code, _, err = _finish(_surd("rebuild", "--engine", "local", "--no-train", env=_env(s.data_root, path)))
    assert code == 0, err[-2000:]
    files = [p for p in (Path(s.data_root) / "tables").rglob("*.parquet")]
    assert not any(image in p.read_bytes() for p in files)  # the rebuild finished the removal
    v2 = sorted((Path(s.data_root) / "releases").glob("v*"))[-1]
    assert v2.name == "v0002" and victim not in manifest(v2)["fingerprint"]
    _sound(Path(s.data_root), s)


def test_a_stage_with_pending_work_while_a_release_is_made(config: tuple[Path, Any], replay: Any) -> None:
    path, s = config
    replay.withhold_newest(20)
    try:
        through_review(s)
        assert pipeline.release(s)
    finally:
        replay.publish_withheld()
    pipeline.crawl(s, "civitai")  # new posts: images and captions made, CLIP scores pending
    for name in chain.PIPELINE.before("clip_scores"):
        pipeline.run(s, name)
    assert pipeline.pending_total(s, "clip_scores") > 0
    engine = queue.connect(s.review_database_url)
    try:  # the accepted set changes, so the release has work too
        [item] = queue.claim(engine, "alice", 1, 600, queue.Filters(margin_max=0.7))
        queue.decide(engine, item["sample_id"], "alice", "accept")
    finally:
        engine.dispose()
    env = _env(s.data_root, path)
    both = [_surd("clip-filter", env=env), _surd("release", "create", "--json", env=env)]
    (clip_code, _, clip_err), (rel_code, rel_out, rel_err) = (_finish(p) for p in both)
    assert clip_code == 0 and rel_code == 0, (clip_err[-1500:], rel_err[-1500:])
    assert json.loads(rel_out)["release"] == "v0002" and pipeline.pending_total(s, "clip_scores") == 0
    _sound(Path(s.data_root), s)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A tmpfs of a chosen size (as root), grown later: a disk that fills, then has room."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = []

    def make(size_kb: int) -> Path:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)], check=True)
        mounted.append(mount)
        return mount

    yield make
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


def _kb(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0])


def _grow(mount: Path, size_kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(mount)], check=True)


def test_a_disk_that_fills_during_a_stage_and_during_a_release(
    config: tuple[Path, Any], small_disk: Any, tmp_path: Path
) -> None:
    path, s = config
    for source in s.sources.enabled:
        pipeline.crawl(s, source)
    for name in chain.PIPELINE.before("clip_scores"):
        pipeline.run(s, name)
    calm = tmp_path / "calm"
    shutil.copytree(s.data_root, calm)
    disk = small_disk(_kb(Path(s.data_root)) + 24)  # room for what is there, and a little
    root = disk / "data"
    shutil.copytree(s.data_root, root)
    code, _, err = _finish(_surd("clip-filter", env=_env(root, path, SURD_DATA_ROOT=str(root))))
    assert code == 3 and _one_error(err) and "no space left" in err, err
    assert not list((root / "tables").rglob(".tmp-*"))  # nothing half-written kept, nor taken for data
    _grow(disk, _kb(root) + 200_000)
    code, _, err = _finish(_surd("clip-filter", env=_env(root, path, SURD_DATA_ROOT=str(root))))
    assert code == 0, err
    calm_s = load_settings(config_file=path, data_root=str(calm))
    pipeline.run(calm_s, "clip_scores")
    rows = [
        sorted(
            pq.read_table(
                r / "tables" / "clip_scores", columns=["sample_id", "status", "p_simple"]
            ).to_pylist(),
            key=str,
        )
        for r in (root, calm)
    ]
    assert rows[0] == rows[1]  # the rerun with space reaches the calm run's table
    # a release on a disk that fills
    for settings in (load_settings(config_file=path, data_root=str(root)), calm_s):
        pipeline.run_all(settings)  # the declared stages after CLIP (the ones before have no work)
        pipeline.review(settings)
    _grow(disk, _kb(root) + 200)
    code, _, err = _finish(_surd("release", "create", env=_env(root, path, SURD_DATA_ROOT=str(root))))
    assert code == 3 and "no space left" in err and _one_error(err), err
    assert not list((root / "releases").glob("v*"))  # the temp folder is never taken for a release
    _grow(disk, _kb(root) + 200_000)
    code, _, err = _finish(_surd("release", "create", env=_env(root, path, SURD_DATA_ROOT=str(root))))
    assert code == 0, err
    made = pipeline.release(calm_s)
    assert manifest(root / "releases" / "v0001")["fingerprint"] == manifest(Path(made))["fingerprint"]
