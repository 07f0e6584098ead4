"""Releases and adapter runs named on the command line (`latest`, `v0002`, a run name or path)."""

from __future__ import annotations

from pathlib import Path

from storage.releases import published
from surd.app.cli.common import fail, open_data
from surd.app.cli.errors import Exit
from surd.settings import Settings
from surd.stages.release import releases


def release_path(s: Settings, version: str) -> Path:
    """A release by name; `latest` is the latest that is out (a held release only by its name)."""
    data = open_data(s, create=False)
    rels = releases(data)
    out = published(data)
    path = out[-1] if version == "latest" and out else data.releases_dir / version
    if not (path / "manifest.json").exists():
        have = ", ".join(p.name for p in rels) or "none yet"
        raise fail(f"no release {version} under {data.releases_dir} (releases: {have})", Exit.DATA)
    return path


def run_path(s: Settings, run: str) -> Path:
    if Path(run).is_dir():
        return Path(run)
    runs_dir = open_data(s, create=False).runs_dir
    path = runs_dir / run
    if not path.is_dir():
        runs = sorted(p.name for p in runs_dir.glob("[!.]*") if p.is_dir())
        raise fail(f"no adapter run {run}; runs: {', '.join(runs) or 'none'}", Exit.DATA)
    return path
