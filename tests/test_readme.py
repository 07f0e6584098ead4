"""Every `surd` command the README shows runs, as written, against a demo data root (offline); the
few that cannot run here are listed below with the reason, and must still be in the README."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests import forkserver

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]
NOT_HERE = {  # a README command that cannot run offline in a test, and why
    "surd review serve": "a server that runs until stopped (tests/surd/review/test_http.py serves it)",
    "surd doctor --env-file .env": "the operator's own .env (tests/surd/app/test_doctor.py checks .env.example)",
    "surd doctor --role gpu": "the real models' weights, absent here (tests/surd/app/test_doctor.py)",
    "surd rebuild --engine local": "the real profile's weights and a GPU (tests/test_rehearsal.py rebuilds)",
}


def commands() -> list[tuple[dict[str, str], list[str], str]]:
    """(environment set by the block so far, argv, the line) of each command in the README's
    bash blocks, comments removed."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        env: dict[str, str] = {}
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "export":
                env |= dict(w.split("=", 1) for w in words[1:])
                continue
            local = {}
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                key, value = words.pop(0).split("=", 1)
                local[key] = value
            if words:
                out.append(({**env, **local}, words, line.split("#")[0].strip()))
    return out


def test_the_readme_lists_only_commands_it_can_account_for() -> None:
    surd = [" ".join(argv) for _, argv, _ in commands() if argv[0].endswith("surd")]
    assert len(surd) >= 12
    for skipped in NOT_HERE:  # none of them stale
        assert any(c.startswith(skipped) for c in [s.replace(".venv/bin/surd", "surd") for s in surd]), (
            skipped
        )


@pytest.fixture
def demo_root(released_copy: Path) -> Path:
    return released_copy


def test_every_surd_command_in_the_readme_runs(demo_root: Path, tmp_path: Path) -> None:
    ran = 0
    for env, argv, line in commands():
        if not argv[0].endswith("surd"):
            continue  # make, cp, docker: the set-up and the stack (CI and tests/test_rehearsal.py)
        plain = " ".join(["surd", *argv[1:]])
        if any(plain.startswith(k) for k in NOT_HERE):
            continue
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")} | env
        run_env |= {
            "SURD_DATA_ROOT": str(demo_root),  # for data/demo, or none given: the demo's
            "SURD_PROFILE": "tiny",
            "SURD_NEW_STEWARD_PASSWORD": "a long enough password",
            "HF_HUB_OFFLINE": "1",
        }
        done = forkserver.surd(*argv[1:], env=run_env, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, (line, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, line
        ran += 1
    assert ran >= 10
