from pathlib import Path

import pytest

from surd.settings import SettingsError, load_settings


def test_defaults_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().data_root == Path("data")
    monkeypatch.setenv("SURD_IMAGES__SIZE", "256")
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    s = load_settings()
    assert s.images.size == 256 and s.profile == "tiny"


def test_toml_below_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "surd.toml"
    cfg.write_text('profile = "tiny"\n[images]\nsize = 128\nquality = 80\n')
    monkeypatch.setenv("SURD_IMAGES__SIZE", "64")
    s = load_settings(cfg)
    assert (s.profile, s.images.size, s.images.quality) == ("tiny", 64, 80)


def test_unknown_env_key_names_valid_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURD_IMAGE__SIZE", "64")
    with pytest.raises(SettingsError, match="unknown setting SURD_IMAGE__SIZE.*SURD_IMAGES__SIZE"):
        load_settings()


def test_unknown_toml_key(tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text("[images]\nsise = 3\n")
    with pytest.raises(SettingsError, match=r"images\.sise"):
        load_settings(cfg)


def test_invalid_value_names_valid_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURD_PROFILE", "huge")
    with pytest.raises(SettingsError, match="'tiny' or 'real'"):
        load_settings()


def test_secrets_masked_in_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURD_SOURCES__CIVITAI__API_KEY", "sk-very-secret")
    s = load_settings()
    assert s.sources.civitai.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in str(s.provenance())


def test_database_password_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURD_REVIEW__DATABASE_URL", "postgresql+psycopg://u:hunter22@db/surd")
    s = load_settings()
    assert s.review_database_url.endswith("u:hunter22@db/surd")
    assert "hunter22" not in str(s.provenance())


def test_the_settings_name_the_registry_sources() -> None:
    from typing import get_args

    from surd.sources import SOURCES, Source

    assert get_args(Source) == SOURCES and load_settings().sources.enabled == list(SOURCES)
