"""The installed `surd` as a user meets it: usage errors, exit codes, stderr, progress, query output."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surd import chain, pipeline
from surd.config import load_settings
from surd.sources.replay import ReplaySite
from tests import forkserver
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

SURD = str(Path(sys.executable).parent / "surd")


def surd(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`surd args` in a process of its own (forked from the session's fork server: tests/forkserver.py)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    return forkserver.surd(*args, env=base | (env or {}), timeout=timeout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty SURD data root."""
    chain.PIPELINE.data_dir(tmp_path / "data").open()
    return tmp_path / "data"


def one_error_line(run: subprocess.CompletedProcess, code: int) -> str:
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["nosuchcmd"], 2, "No such command 'nosuchcmd'"),
        (["crawl", "civitai", "--limit", "abc"], 2, "Invalid value for '--limit'"),
        (["crawl", "civitai", "--limit", "0"], 2, "greater than or equal to 1"),
        (["crawl", "nosite"], 2, "'nosite' is not one of 'civitai', 'lexica', 'sdonline'"),
        (["crawl"], 2, "Missing argument 'SOURCE'. Choose from: civitai, lexica, sdonline"),
        (["status", "--bogus"], 2, "No such option: --bogus"),
        (["release", "export", "--format", "zip", "--out", "x"], 2, "'zip' is not one of"),
    ],
)
def test_usage_errors_are_one_line_with_the_usage_and_exit_2(args: list[str], code: int, says: str) -> None:
    line = one_error_line(surd(*args), code)
    assert says in line and "(usage: surd " in line and "--help" in line


def test_version() -> None:
    run = surd("--version")
    assert run.returncode == 0 and re.fullmatch(r"surd \d+\.\d+\.\d+\n", run.stdout) and not run.stderr


def test_data_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    line = one_error_line(surd("status", env={"SURD_DATA_ROOT": str(tmp_path / "f")}), 3)
    assert "is not a folder" in line


def test_folder_without_marker(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("x")
    line = one_error_line(surd("status", env={"SURD_DATA_ROOT": str(tmp_path)}), 3)
    assert "no SCHEMA_VERSION marker" in line


@pytest.mark.parametrize("command", [["status"], ["sql", "select 1"], ["release", "list"]])
def test_readers_never_create_a_data_root(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "typo"
    line = one_error_line(surd(*command, env={"SURD_DATA_ROOT": str(missing)}), 3)
    assert "does not exist" in line and not missing.exists()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("selec 1", "Parser Error"),
        ("select nosuch from raw_items", 'Referenced column "nosuch" not found'),
        ("select * from nosuch", "Table with name nosuch does not exist"),
    ],
)
def test_bad_sql_is_a_usage_error(crawled: dict[str, str], query: str, says: str) -> None:
    line = one_error_line(surd("sql", query, env=crawled), 2)
    assert line.startswith("error: bad SQL:") and says in line


def test_unknown_setting_suggests_the_nearest(tmp_path: Path) -> None:
    run = surd("status", env={"SURD_DATA_ROOT": str(tmp_path), "SURD_IMAGES__SIZEE": "5"})
    line = one_error_line(run, 2)
    assert "unknown setting SURD_IMAGES__SIZEE; did you mean SURD_IMAGES__SIZE" in line
    assert len(line) < 300  # the nearest keys, not all of them


def test_config_show_all_lists_every_setting() -> None:
    run = surd("config", "show", "--all")
    assert run.returncode == 0
    assert "SURD_IMAGES__SIZE" in run.stdout and "SURD_CAPTION__NUM_BEAMS" in run.stdout


def test_the_steward_password_variable_is_not_a_setting(root: Path) -> None:
    run = surd(
        "review",
        "add-steward",
        "alice",
        env={"SURD_DATA_ROOT": str(root), "SURD_NEW_STEWARD_PASSWORD": "pw-123456789"},
    )
    assert run.returncode == 0, run.stderr
    assert "steward alice (steward) saved" in run.stdout
    run = surd("review", "add-steward", "bob", "--role", "owner", env={"SURD_DATA_ROOT": str(root)})
    assert "'owner' is not one of 'steward', 'admin'" in one_error_line(run, 2)


def test_missing_release_is_a_data_error(root: Path) -> None:
    line = one_error_line(surd("release", "verify", "v0007", env={"SURD_DATA_ROOT": str(root)}), 3)
    assert "no release v0007" in line


def test_unreachable_site_exits_4_with_source_reason_and_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    run = surd(
        "crawl",
        "civitai",
        "--base-url",
        f"http://127.0.0.1:{port}",
        env={"SURD_DATA_ROOT": str(tmp_path / "d"), "SURD_CRAWL__MAX_RETRIES": "0"},
    )
    line = one_error_line(run, 4)
    assert f"crawl civitai failed: connection_error at http://127.0.0.1:{port}/" in line
    st = surd("status", env={"SURD_DATA_ROOT": str(tmp_path / "d")})
    assert "unfinished: failed with connection_error at" in st.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_is_a_device_error(root: Path) -> None:
    line = one_error_line(surd("caption", env={"SURD_DATA_ROOT": str(root), "SURD_DEVICE": "cuda"}), 5)
    assert "no CUDA GPU is visible" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    run = surd("--debug", "status", env={"SURD_DATA_ROOT": str(tmp_path / "f")})
    assert run.returncode == 3 and "Traceback" in run.stderr and "DataRootError" in run.stderr


# ---- results as data -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory, replay: ReplaySite) -> dict[str, str]:
    """A data root holding the replay site's civitai raw items: the environment for `surd`."""
    from surd.app.demo import demo_config

    root = tmp_path_factory.mktemp("crawled") / "data"
    cfg = demo_config(root, replay)
    s = load_settings(**cfg)
    pipeline.crawl(s, "civitai")
    urls = replay.source_urls()
    return {
        "SURD_DATA_ROOT": str(root),
        "SURD_PROFILE": "tiny",
        "SURD_DEVICE": "cpu",
        "SURD_SOURCES__CIVITAI__BASE_URL": urls["civitai"],
    }


def test_sql_prints_a_table_with_headers_csv_and_json(crawled: dict[str, str]) -> None:
    q = "select source, count(*) n from raw_items group by 1"
    table = surd("sql", q, env=crawled)
    assert table.returncode == 0 and "source" in table.stdout and "civitai" in table.stdout
    header = table.stdout.splitlines()[1]
    assert "source" in header and " n " in header
    rows = list(csv.DictReader(io.StringIO(surd("sql", q, "--format", "csv", env=crawled).stdout)))
    assert rows == [{"source": "civitai", "n": "81"}]
    assert json.loads(surd("sql", q, "--format", "json", env=crawled).stdout) == [
        {"source": "civitai", "n": 81}
    ]
    lines = surd("sql", q, "--format", "jsonl", env=crawled).stdout.splitlines()
    assert [json.loads(x) for x in lines] == [{"source": "civitai", "n": 81}]


def test_crawl_prints_a_summary_or_json(crawled: dict[str, str]) -> None:
    run = surd("crawl", "civitai", env=crawled)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"crawl civitai: \d+ page\(s\), \d+ item\(s\) \(0 new\); ended: \w+\n", run.stdout)
    data = json.loads(surd("crawl", "civitai", "--json", env=crawled).stdout)
    assert data["source"] == "civitai" and data["new_items"] == 0


# ---- progress --------------------------------------------------------------------------------

PROGRESS = re.compile(r"images: (\d+)/(\d+) items \(\d+%\), (\d+\.\d) items/s, ETA (\d+:\d\d:\d\d)")


def _in_pty(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run under a pseudo-terminal (as a person at a terminal sees it): exit code and the screen."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command
        os.execve(SURD, [SURD, *args], env)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _fresh(crawled: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A copy of the crawled data root, so each test has its whole images stage to run."""
    import shutil

    shutil.copytree(crawled["SURD_DATA_ROOT"], tmp_path / "data")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")}
    # 25 images a second: the stage lasts a few seconds, long enough to be watched
    return (
        base | crawled | {"SURD_DATA_ROOT": str(tmp_path / "data"), "SURD_IMAGES__REQUESTS_PER_SECOND": "25"}
    )


def test_images_under_a_terminal_show_total_rate_and_eta_while_running(
    crawled: dict[str, str], tmp_path: Path
) -> None:
    env = _fresh(crawled, tmp_path) | {"TERM": "xterm", "COLUMNS": "160"}
    code, screen = _in_pty(["images"], env)
    assert code == 0, screen[-2000:]
    n = int(re.search(r"images: (\d+) processed", screen).group(1))
    seen = [tuple(m.groups()) for m in PROGRESS.finditer(screen)]
    assert {int(t) for _, t, _, _ in seen} == {n}, screen[-2000:]  # known from the first frame
    # before the end: a frame with items still to do, a measured rate and an ETA
    assert any(0 < int(done) < n and float(rate) > 0 for done, _, rate, _ in seen), screen[-3000:]


def test_caption_under_a_terminal_moves_per_batch(crawled: dict[str, str], tmp_path: Path) -> None:
    env = _fresh(crawled, tmp_path) | {"TERM": "xterm", "COLUMNS": "160", "SURD_CAPTION__BATCH_SIZE": "4"}
    assert surd("images", env=env).returncode == 0
    code, screen = _in_pty(["caption"], env)
    assert code == 0, screen[-2000:]
    frames = re.findall(r"captions: (\d+)/(\d+) items \(\d+%\), (\d+\.\d) items/s, ETA \d+:\d\d:\d\d", screen)
    assert frames and all(int(t) == int(frames[0][1]) > 0 for _, t, _ in frames)
    assert any(0 < int(d) < int(t) for d, t, _ in frames), screen[-3000:]


def test_without_a_terminal_progress_is_logged_every_interval(
    crawled: dict[str, str], tmp_path: Path
) -> None:
    env = _fresh(crawled, tmp_path) | {"SURD_PROGRESS_EVERY": "0.5"}
    run = subprocess.run([SURD, "images"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    n = int(re.match(r"images: (\d+) processed", run.stdout).group(1))  # the result on stdout
    lines = list(PROGRESS.finditer(run.stderr))  # progress on stderr
    assert len(lines) >= 2, run.stderr  # at least one while running, and the last at the end
    assert int(lines[0].group(1)) < n and int(lines[-1].group(1)) == n == int(lines[0].group(2))
    assert re.match(r"\d\d:\d\d:\d\d images: ", run.stderr)  # a timestamped log line
