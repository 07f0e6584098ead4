"""`surd doctor` and the services that refuse to start on its errors: the shipped `.env.example`
is refused for its placeholders, the real profile names no random model, a lock-less data root is
refused, and `surd deploy setup` wants a real Prefect server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from storage import locks
from surd.app.cli import main
from surd.app.doctor import diagnose, errors
from surd.config import load_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


def surd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    got = capsys.readouterr()
    return int(done.value.code or 0), got.out, got.err


def test_the_shipped_env_example_is_refused_for_its_placeholders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    try:  # the command reads the file into its environment, as a fresh process would
        code, out, err = surd(capsys, "doctor", "--role", "cpu", "--env-file", str(ROOT / ".env.example"))
    finally:
        os.environ.clear()
        os.environ.update(before)
    assert code == 1 and "error(s)" in err, err
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert lines["error    contact"].count("https://example.org/surd-contact") == 1
    assert lines["error    secret"].startswith("error    secret: review.session_secret is a placeholder")
    assert all(len(line.split(": ", 1)) == 2 for line in out.splitlines())  # one finding a line


def test_the_real_profile_names_no_random_model(tmp_path: Path) -> None:
    s = load_settings(profile="real", data_root=str(tmp_path / "d"))
    [models] = [f for f in diagnose(s, "cpu") if f.topic == "models"]
    assert models.level == "ok" and "tiny" not in models.message
    assert "huggyllama/llama-13b" in models.message and "stable-diffusion-v1-5" in models.message
    mixed = load_settings(profile="real", embed={"llm": "tiny"}, data_root=str(tmp_path / "d"))
    [bad] = [f for f in diagnose(mixed, "cpu") if f.topic == "models"]
    assert bad.level == "error" and "LLM" in bad.message


def test_missing_weights_offline_are_named_with_their_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    s = load_settings(profile="real", data_root=str(tmp_path / "d"))
    weights = [f for f in diagnose(s, "gpu") if f.topic == "weights"]
    assert [f.level for f in weights] == ["error"] * 4
    assert any("huggyllama/llama-13b (about 26 GB)" in f.message for f in weights)


def test_a_data_root_whose_locks_do_not_keep_writers_apart_is_refused(tmp_path: Path) -> None:
    # a probe that takes the lock the parent holds: what a mount without working locks does
    grabs = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with pytest.raises(locks.LocksUnsupported, match="refusing to write"):
        locks.check_supported(tmp_path / "locks", probe=grabs)
    locks.check_supported(tmp_path / "locks")  # this machine's disk: a second process is kept out
    s = load_settings(data_root=str(tmp_path / "d"), profile="tiny")
    assert [f.level for f in diagnose(s, "review") if f.topic == "data root"] == ["ok"]


def test_deploy_setup_wants_a_real_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    code, _, err = surd(capsys, "deploy", "setup")
    assert code == 4 and len(err.strip().splitlines()) == 1 and "PREFECT_API_URL is not set" in err
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nothing listens
    code, _, err = surd(capsys, "deploy", "setup")
    assert code == 4 and len(err.strip().splitlines()) == 1 and "is not reachable" in err


def test_the_review_server_refuses_a_placeholder_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURD_DATA_ROOT", str(tmp_path / "d"))
    monkeypatch.setenv("SURD_REVIEW__SESSION_SECRET", "change-me-64-hex-characters")
    code, _, err = surd(capsys, "review", "serve", "--port", str(free_port()))
    assert (
        code == 2
        and err.startswith("error: refusing to start: secret:")
        and len(err.strip().splitlines()) == 1
    )
    assert not errors(
        diagnose(load_settings(data_root=str(tmp_path / "d"), review={"session_secret": "9a" * 32}), "review")
    )
