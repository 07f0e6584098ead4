"""Shared fixtures: offline hub, a private Prefect home, the replay site, tiny settings."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="surd-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Two test workers share two cores: OpenMP threads that spin while they wait take the other
# worker's core (about 20 % of the suite's time); passive ones sleep. Same thread count, same
# numbers: only how an idle thread waits changes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from storage.torch_compat import install

install()

from surd.sources.replay import ReplaySite, default_fixtures_dir  # noqa: E402

FIXTURES = default_fixtures_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _clean_surd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SURD_"):
            monkeypatch.delenv(key)


def through_review(settings) -> None:
    """Take a data root through the crawls, every declared stage and review, with the real stages."""
    from surd import pipeline

    for source in settings.sources.enabled:
        pipeline.crawl(settings, source)
    pipeline.run_all(settings)
    pipeline.review(settings)


def released_root(folder: Path, replay: ReplaySite) -> Path:
    """A demo data root under `folder`, taken through review and a first release."""
    from surd import pipeline
    from surd.app.demo import demo_config
    from surd.config import load_settings

    root = folder / "data"
    s = load_settings(**demo_config(root, replay))
    through_review(s)
    assert pipeline.release(s)
    return root


@pytest.fixture(scope="session")
def released_demo(tmp_path_factory: pytest.TempPathFactory, replay: ReplaySite) -> Path:
    """THE demo data root of the test session, taken through review and a first release once (by
    whichever xdist worker asks first; the others wait for it and share it), read-only: a test that
    writes copies it (`released_copy`). Its stored URLs name the replay site of the worker that made
    it; a test that fetches again crawls its own."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one run's workers
    with (shared / "released-demo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "released-demo.done"
        if not done.exists():
            released_root(shared / "released-demo", replay)
            done.touch()
    root = shared / "released-demo" / "data"
    before = _tree(root)
    yield root
    assert _tree(root) == before, "a test wrote into the session's demo root: copy it (released_copy)"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` but the lock files, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "locks" not in p.parts
    }


def copy_root(root: Path, to: Path) -> Path:
    """A copy of a data root (of the session's, which no test may change)."""
    import shutil

    shutil.copytree(root, to, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return to


@pytest.fixture
def released_copy(released_demo: Path, tmp_path: Path) -> Path:
    """A copy of the session's released demo root, for this test alone (at `demo_settings`'s)."""
    return copy_root(released_demo, tmp_path / "data")


@pytest.fixture
def reviewed_settings(released_demo: Path, demo_settings):
    """`demo_settings` whose data root is the session's demo root as it was before its first
    release: taken through the crawls, every declared stage and review (what `through_review`
    makes, without making it again)."""
    import shutil

    root = copy_root(released_demo, Path(demo_settings.data_root))
    shutil.rmtree(root / "releases")
    shutil.rmtree(root / "state" / "outbox", ignore_errors=True)
    return demo_settings


@pytest.fixture(scope="session")
def replay() -> ReplaySite:
    site = ReplaySite().start()
    yield site
    site.stop()


@pytest.fixture
def demo_settings(tmp_path: Path, replay: ReplaySite):
    from surd.app.demo import demo_config
    from surd.config import load_settings

    return load_settings(**demo_config(tmp_path / "data", replay))


@pytest.fixture(scope="session")
def postgres():
    from tests.pg import PostgresServer

    server = PostgresServer(free_port()).start()
    yield server
    server.stop()


# `make test` runs two workers (pytest-xdist, `--dist loadfile`): a test file goes whole to one
# worker (its module fixtures made once). The longest files first, so that no worker is left with
# a long one at the end while the other idles. Measured on 2 cores; any order is valid.
LONGEST_FIRST = [
    "tests/test_rehearsal.py",
    "tests/test_end_to_end.py",
    "tests/test_multihost.py",
    "tests/test_benchmarks.py",
    "tests/test_chaos.py",
    "tests/surd/stages/test_prune.py",
    "tests/storage/test_locks.py",
    "tests/surd/models/test_lavis.py",
    "tests/flows/test_deployments.py",
    "tests/surd/app/test_cli.py",
    "tests/surd/app/test_bad_states.py",  # makes the session's demo root while the other worker works
    "tests/surd/stages/test_dedup.py",
    "tests/surd/models/test_models.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    root = Path(config.rootpath)
    items.sort(key=lambda it: rank.get(str(Path(it.path).relative_to(root)), len(rank)))
