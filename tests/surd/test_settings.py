from pathlib import Path

import pytest

from surd.config import load_settings
from surd.settings import SettingsError


def test_defaults_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().data_root == Path("data")
    monkeypatch.setenv("SURD_IMAGES__SIZE", "256")
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    s = load_settings()
    assert s.stage("images").size == 256 and s.profile == "tiny"


def test_toml_below_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "surd.toml"
    cfg.write_text('profile = "tiny"\n[images]\nsize = 128\nquality = 80\n')
    monkeypatch.setenv("SURD_IMAGES__SIZE", "64")
    s = load_settings(cfg)
    assert (s.profile, s.stage("images").size, s.stage("images").quality) == ("tiny", 64, 80)


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


def test_every_declared_stage_has_its_section_with_typed_bounded_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from surd import chain
    from surd.config import describe_settings

    s = load_settings()
    keys = {d["key"]: d for d in describe_settings()}
    for stage in chain.PIPELINE:
        section = stage.settings_section()
        assert isinstance(s.stage(section), stage.Params), stage.name
        for name in stage.Params.model_fields:
            assert f"{section}.{name}" in keys  # listed by `surd config show --all`
    assert s.provenance()["caption"]["batch_size"] == 256  # shown under its section, as before
    monkeypatch.setenv("SURD_CLIP__BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="clip.batch_size"):
        load_settings()


def test_a_stage_owns_its_parameters_and_two_instances_can_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import Field

    from surd import chain
    from surd.settings import StageParams
    from surd.stages.base import Filter

    class Short(Filter):
        name = "short"

        class Params(StageParams):
            max_words: int = Field(5, ge=1, description="longest caption kept")

        def keep(self, row):
            return len(row["simple_prompt"].split()) <= self.params.max_words, "too_long"

    strict = Short.named("short_strict", max_words=2)
    with pytest.raises(ValueError):
        Short.named("short_bad", max_words=0)  # out of bounds: refused at declaration
    p = chain.PIPELINE.with_stage(Short, after="captions").with_stage(strict, after="short")
    monkeypatch.setenv("SURD_SHORT_STRICT__MAX_WORDS", "3")
    s = load_settings(pipeline=p, data_root=str(tmp_path))
    assert s.stage("short").max_words == 5 and s.stage("short_strict").max_words == 3
    cfg = tmp_path / "s.toml"
    cfg.write_text("[short]\nmax_words = 7\n")
    monkeypatch.delenv("SURD_SHORT_STRICT__MAX_WORDS")
    s = load_settings(cfg, pipeline=p)
    assert s.stage("short").max_words == 7 and s.stage("short_strict").max_words == 2
    assert (
        p.build("short", s, None).params.max_words,
        p.build("short_strict", s, None).params.max_words,
    ) == (
        7,
        2,
    )
    assert p.command(strict) == "short-strict" and strict.name == "short_strict"


@pytest.mark.parametrize(
    "content,says",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not text"),
        (b"profile = [", "not valid TOML"),
        (b"[images]\nsize = 10000000000\n", "images.size"),
        (b"part_size = 100000000000000000000000000\n", "part_size"),
        (b"[clip]\nnear_duplicate_at = 0.9\n", "moved to near_duplicates.at"),
    ],
)
def test_a_bad_config_file_is_a_settings_error(tmp_path: Path, content: bytes, says: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(content)
    with pytest.raises(SettingsError, match=says):
        load_settings(cfg)


def test_a_folder_given_as_the_config_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not a file"):
        load_settings(tmp_path)
