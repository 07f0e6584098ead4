"""One writer at a time: overlapping runs of a stage or a release wait or say who is writing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.locks import Busy, writing
from surd import chain, pipeline
from tests import forkserver

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

SURD = str(Path(sys.executable).parent / "surd")


def _hold(root: str, name: str, part: tuple[int, int] | None, ready: mp.Event, seconds: float) -> None:
    with writing(Path(root), name, part=part):
        ready.set()
        time.sleep(seconds)


def _holder(tmp_path: Path, name: str, part: tuple[int, int] | None = None, seconds: float = 30):
    ready = mp.get_context("fork").Event()
    proc = mp.get_context("fork").Process(target=_hold, args=(str(tmp_path), name, part, ready, seconds))
    proc.start()
    assert ready.wait(10)
    return proc


def test_a_second_writer_is_told_who_writes(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "images")
    try:
        busy = rf"another run is writing images \(pid {proc.pid} on .*, since "
        with pytest.raises(Busy, match=busy), writing(tmp_path, "images", wait_s=0.3):
            pass
        with writing(tmp_path, "captions", wait_s=0):  # another table: no wait
            pass
    finally:
        proc.kill()
        proc.join()


def test_a_killed_writer_frees_its_lock_at_once(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "release")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    start = time.monotonic()
    with writing(tmp_path, "release", wait_s=5):
        assert time.monotonic() - start < 1


def test_partitions_share_a_table_but_never_with_a_whole_table_writer(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "captions", part=(0, 2))
    try:
        with writing(tmp_path, "captions", wait_s=0, part=(1, 2)):  # a sibling partition: side by side
            pass
        with pytest.raises(Busy), writing(tmp_path, "captions", wait_s=0, part=(0, 2)):
            pass  # the same partition twice
        with pytest.raises(Busy), writing(tmp_path, "captions", wait_s=0):
            pass  # a whole-table run beside a partitioned one
    finally:
        proc.kill()
        proc.join()


def test_a_waiting_writer_goes_on_when_the_first_ends(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "images", seconds=1.0)
    said: list[str] = []
    with writing(tmp_path, "images", wait_s=20, on_wait=said.append):
        assert not proc.is_alive() or proc.exitcode is None
    proc.join()
    assert said and "waiting for images" in said[0]


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    return env | {"SURD_DATA_ROOT": str(root), "SURD_PROFILE": "tiny", "SURD_DEVICE": "cpu"} | extra


def _together(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    return [
        subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)
    ]


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_images_runs_at_once_write_each_item_once(tmp_path: Path, demo_settings) -> None:
    """The second run meets the first one's lock by construction, not by timing: the first is
    paused (SIGSTOP) while it holds the lock, and resumed once the second says it waits."""
    pipeline.crawl(demo_settings, "civitai")
    # 25 items at 5 a second: the first run holds the lock for seconds, long enough to be seen
    env = _env(demo_settings.data_root, SURD_IMAGES__REQUESTS_PER_SECOND="5")
    holder = Path(demo_settings.data_root) / "locks" / "images.holder.json"
    popen = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([SURD, "images"], **popen)
    second = None
    try:

        def first_holds() -> bool:
            assert first.poll() is None, first.communicate()
            try:
                return json.loads(holder.read_text())["pid"] == first.pid
            except (OSError, ValueError, KeyError):
                return False

        _wait_for(first_holds, 240, "the first run to take the images lock")
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.Popen([SURD, "images"], **popen)
        second_err: list[str] = []
        reader = threading.Thread(target=lambda: second_err.extend(second.stderr), daemon=True)
        reader.start()
        _wait_for(
            lambda: (
                any("waiting for images: another run is writing it (pid " in ln for ln in second_err)
                or second.poll() is not None
            ),
            240,
            "the second run to wait for the lock",
        )
        os.kill(first.pid, signal.SIGCONT)
        out2, _ = second.communicate(timeout=300)
        reader.join(10)
        out1, err1 = first.communicate(timeout=300)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    err2 = "".join(second_err)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    assert "waiting for images: another run is writing it (pid " in err2, err2
    said = [r.split(":")[1].split(",")[0].strip() for r in (out1, out2)]
    assert said[0].endswith(" processed") and said[1].startswith("nothing pending"), (out1, out2, err1, err2)
    ids = (
        pq.read_table(demo_settings.data_root / "tables" / "images", columns=["sample_id"])
        .column(0)
        .to_pylist()
    )
    assert len(ids) == len(set(ids)) > 0


def test_two_releases_at_once_never_collide(tmp_path: Path, reviewed_settings) -> None:
    s = reviewed_settings
    runs = _together([[SURD, "release", "create"]] * 3, _env(s.data_root))
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    assert sum("release created v0001" in r.stdout for r in runs) == 1, [r.stdout for r in runs]
    releases = sorted(p.name for p in (Path(s.data_root) / "releases").iterdir())
    assert releases == ["v0001"]
    verify = forkserver.surd("release", "verify", env=_env(s.data_root))
    assert verify.returncode == 0 and "v0001: ok" in verify.stdout
    assert chain.PIPELINE.data_dir(s.data_root).open(create=False)


def test_a_new_data_root_opened_by_two_processes_at_once(tmp_path: Path) -> None:
    """What one process leaves in a new root while it opens it (the marker's temp file, its locks)
    does not make the other refuse the root as foreign; anything else still does."""
    from storage.layout import SchemaVersionError

    root = tmp_path / "new"
    (root / "locks").mkdir(parents=True)
    (root / ".tmp-0123abcd-SCHEMA_VERSION").write_text("{")  # another process, mid-write
    chain.PIPELINE.data_dir(root).open()
    assert json.loads((root / "SCHEMA_VERSION").read_text())["schema_version"] >= 1
    ctx = mp.get_context("fork")
    for k in range(5):  # and for real: four processes open one new root at the same moment
        fresh = tmp_path / f"fresh{k}"
        with ctx.Pool(4) as pool:
            assert pool.map(_open_root, [fresh] * 4) == ["ok"] * 4
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SchemaVersionError, match="no SCHEMA_VERSION marker"):
        chain.PIPELINE.data_dir(foreign).open()


def _open_root(root: Path) -> str:
    with writing(root, f"table-{os.getpid()}"):  # a writer: its lock is taken, then the root opened
        pass
    chain.PIPELINE.data_dir(root).open()
    return "ok"
