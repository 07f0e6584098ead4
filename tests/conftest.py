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
