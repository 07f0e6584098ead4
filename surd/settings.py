"""One typed settings object: `SURD_*` environment variables, an optional TOML file, defaults.

Nested sections use a double underscore in the environment (``SURD_IMAGES__SIZE=256``) and
tables in TOML (``[images] size = 256``). Unknown keys fail at start with the list of valid ones.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from adapter.config import TrainConfig
from surd.config_keys import (
    ENV_PREFIX,
    SettingsError,
    check_env_keys,
    describe,
    did_you_mean,
    format_error,
    moved_note,
    unknown_keys,
    valid_keys,
)
from surd.release_settings import ReleaseSettings
from surd.sources import SOURCES, Source
from surd.sources.civitai import CivitaiSettings
from surd.sources.lexica import LexicaSettings
from surd.sources.sdonline import SdOnlineSettings

# variables of the command line, not settings: read where the command documents them
COMMAND_VARIABLES = {
    "SURD_CONFIG": "the TOML settings file (else ./surd.toml)",
    "SURD_DEBUG": "1: show the traceback of an error (as --debug)",
    "SURD_PROGRESS_EVERY": "seconds between progress lines when there is no terminal (default 10)",
    "SURD_NEW_STEWARD_PASSWORD": "the password of `surd review add-steward` (else it asks)",
    "SURD_POOL": "set by `surd deploy worker`: the work pool whose flow runs this process runs",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrawlSettings(_Section):
    contact_url: str = "https://github.com/surd-builder/surd"
    requests_per_second: float = Field(1.0, gt=0, description="per host")
    max_concurrency: int = Field(2, ge=1, description="per host")
    timeout_s: float = Field(20.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0, description="the longest wait of our own backoff")
    retry_after_max_s: float = Field(
        600.0, ge=0, description="a server's Retry-After is honoured up to this many seconds"
    )
    max_response_bytes: int = Field(20_000_000, gt=0)
    obey_robots: bool = True
    limit: int | None = Field(None, ge=1, description="max raw items per source and crawl")


class SourcesSettings(_Section):
    enabled: list[Source] = list(SOURCES)
    civitai: CivitaiSettings = CivitaiSettings()
    lexica: LexicaSettings = LexicaSettings()
    sdonline: SdOnlineSettings = SdOnlineSettings()


class ReviewSettings(_Section):
    database_url: SecretStr | None = None  # may hold a password; default: SQLite under the data root
    lease_seconds: int = Field(900, ge=1)
    audit_share: float = Field(0.1, ge=0, le=1)
    reject_reasons: list[str] = "caption_wrong nsfw low_quality text_or_watermark duplicate other".split()
    auto_policy: Literal["none", "demo-margin-v1"] = "none"
    auto_min_margin: float = -0.5
    claim_batch: int = Field(10, ge=1, le=200, description="items a steward holds at once in the UI")
    comments_per_item: int = Field(50, ge=1, description="comments and flags one item may collect")
    comments_per_minute: int = Field(10, ge=1, description="comments one steward may send a minute")
    max_held: int = Field(
        60, ge=1, le=10_000, description="items one steward may hold at once, every claim and view together"
    )
    prefetch: int = Field(5, ge=0, le=50, description="next images the review page preloads")
    blur_at: int = Field(2, ge=0, le=4, description="NSFW level (0 safe … 3 explicit) blurred from; 4: never")
    blur_unlabelled: bool = Field(False, description="blur images whose source gives no NSFW label")
    blur_score: float | None = Field(
        None, ge=0, le=1, description="also blur at this CLIP zero-shot NSFW score"
    )
    blur_detector: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="blur at this trained detector's NSFW score (surd.stages.nsfw); None: never",
    )
    grid_size: int = Field(24, ge=4, le=60, description="thumbnails on a page of the grid view")
    guidelines: Path | None = Field(None, description="the reviewing guidelines, a Markdown file (versioned)")
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    session_secret: SecretStr | None = None
    session_max_age_s: int = Field(12 * 3600, ge=60)
    secure_cookies: bool = Field(True, description="Secure session cookie; off only for plain-HTTP loopback")
    login_attempts_per_minute: int = Field(10, ge=1, description="failed logins a minute from one address")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="a request body past this is refused (413)")
    trusted_proxies: list[str] = Field(
        [], description="proxy addresses whose X-Forwarded-For names the client (default: trust none)"
    )


REAL_LLM = "llama-13b"  # the `real` profile's: the paper's reference figures are with LLaMA 13B


class EmbedSettings(_Section):
    llm: str = Field(
        "tiny",
        description="tiny | smollm2-135m | llama-7b | llama-13b | llama-33b | a hub id; "
        "default: llama-13b under profile real, tiny under tiny",
    )
    batch_tokens: int = Field(65536, ge=16, description="tokens per forward batch")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    compile_blocks: bool = Field(True, description="on a GPU: torch.compile each decoder block")
    workers: int = Field(1, ge=1, description="embedding processes; on GPUs, one per GPU")
    split_across_gpus: bool = Field(False, description="spread one model over all GPUs (33B)")
    shared_first: bool | None = Field(
        None,
        description="compute a first token shared by every prompt (a LLaMA BOS) once, not per prompt "
        "(exact up to summation order); None: on a GPU only",
    )
    dedupe: bool = Field(True, description="embed each distinct prompt once (of each 8,192 at a time)")
    part_bytes: int = Field(
        512 * 2**20,
        ge=2**16,
        description="vectors in a written part (all layers); a part holds at least part_size prompts",
    )


class AdapterSettings(TrainConfig):
    """The training settings (adapter.config.TrainConfig, their one definition) and what the
    pipeline adds around training: the base model and the evaluation."""

    base_model: str = Field(
        "tiny", description="tiny | real (SD 1.5) | a hub id; default: real under profile real"
    )
    eval_images_per_prompt: int = Field(10, ge=1)
    eval_steps: int = Field(30, ge=1)
    log_every: int = Field(50, ge=1, description="training steps between loss lines in the flow's log")
    eval_prompts_per_suite: int = Field(15, ge=1, le=15, description="of Action, Color, Counting (15 each)")
    eval_quality_metrics: list[str] = Field(
        ["clipiqa", "musiq", "brisque"], description="pyiqa metrics (the `eval` extra); skipped when absent"
    )

    def train_config(self) -> TrainConfig:
        """Only the training settings, as the trainer takes them."""
        return TrainConfig(**self.model_dump(include=set(TrainConfig.model_fields)))


class ScaleSettings(_Section):
    dask_address: str | None = Field(None, description="a Dask scheduler, e.g. tcp://scheduler:8786")
    local_workers: int = Field(0, ge=0, description=">0: a Dask LocalCluster of that many processes")
    partitions: int = Field(0, ge=0, description="partitions per batch stage; 0: one per Dask worker")

    @property
    def enabled(self) -> bool:
        return self.dask_address is not None or self.local_workers > 0


class DeploySettings(_Section):
    rebuild_cron: str = Field("0 3 * * 1", description="the rebuild deployment's schedule (cron)")
    release_cron: str = Field("0 * * * *", description="the release deployment's schedule (cron)")
    timezone: str = "UTC"
    workdir: str = Field("/app", description="where pool workers run the flows from (prefect.yaml's pull)")


class StageParams(_Section):
    """A batch stage's parameters (surd.stages.base.Stage.Params): typed, bounded, described,
    mounted into the settings under the stage's section by the pipeline's declaration."""


class NoParams(StageParams):
    """A stage without parameters of its own."""


@dataclass(frozen=True)
class Mount:
    """One stage's parameters in the settings: its model, and the defaults its declaration gives
    (a second instance of a stage with other thresholds: surd.stages.base.Stage.named)."""

    params: type[StageParams]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def validate(self, given: Mapping[str, Any]) -> StageParams:
        return self.params.model_validate({**self.defaults, **given})


class Settings(BaseSettings):
    """The effective settings of a run. Every output records `provenance()` of these. The batch
    stages' parameters are in `stages`, by section (`settings.stage("images")`), mounted by the
    pipeline's declaration (surd.config.load_settings); `SURD_<SECTION>__<PARAM>` sets them."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_root: Path = Path("data")
    profile: Literal["tiny", "real"] = "real"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    part_size: int = Field(256, ge=1, le=10_000_000, description="items per written part")
    model_threads: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="torch (and OpenMP/MKL) threads of a model stage; default: this process's share of "
        "the cores (split between local Dask workers) less its decode workers",
    )
    lock_wait_s: float = Field(
        60.0, ge=0, description="how long a writer waits for another run writing the same table or release"
    )
    seed: int = 0
    crawl: CrawlSettings = CrawlSettings()
    sources: SourcesSettings = SourcesSettings()
    review: ReviewSettings = ReviewSettings()
    release: ReleaseSettings = ReleaseSettings()
    embed: EmbedSettings = EmbedSettings()
    adapter: AdapterSettings = AdapterSettings()
    deploy: DeploySettings = DeploySettings()
    scale: ScaleSettings = ScaleSettings()
    fault_kill_at: str | None = Field(
        None, description="testing only: 'table:n' SIGKILLs the process after n parts"
    )
    stages: dict[str, StageParams] = Field(default_factory=dict, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # `build_settings` layers defaults, TOML, environment and overrides

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Models the profile implies where none is set: `real` embeds with the paper's reference
        LLM (LLaMA 13B: its Tables 1 and 7) on SD 1.5; `tiny`, seeded random models."""
        if not isinstance(data, dict):
            return data
        real = data.get("profile", "real") == "real"
        for section, key, value in (("embed", "llm", REAL_LLM), ("adapter", "base_model", "real")):
            given = data.get(section)
            if given is None or (isinstance(given, dict) and key not in given):
                data = {**data, section: {**(given or {}), key: value if real else "tiny"}}
        return data

    def stage(self, section: str, mount: Mount | None = None) -> Any:
        """The parameters of the stage mounted at `section`; a stage these settings were not
        loaded with (one built outside the declaration, as a test does) gets its defaults."""
        found = self.stages.get(section)
        if found is not None:
            return found
        if mount is None:
            raise KeyError(f"no stage section {section!r}; the sections are: {', '.join(self.stages)}")
        return mount.validate({})

    def provenance(self) -> dict[str, Any]:
        """Settings as plain JSON with every secret masked, each stage's parameters under its
        section; stored with every output."""
        out: dict[str, Any] = json.loads(self.model_dump_json())
        for section, params in self.stages.items():
            out[section] = json.loads(params.model_dump_json())
        return out

    @property
    def review_database_url(self) -> str:
        if self.review.database_url is not None:
            return self.review.database_url.get_secret_value()
        return f"sqlite:///{self.data_root / 'review' / 'queue.db'}"


CORE = [k for k in valid_keys(Settings) if k != "stages"]


def _keys(mounts: Mapping[str, Mount]) -> list[str]:
    """Every valid setting's key, the stages' parameters under their sections."""
    return CORE + [f"{sec}.{k}" for sec, m in mounts.items() for k in valid_keys(m.params)]


def describe_settings(mounts: Mapping[str, Mount]) -> list[dict[str, Any]]:
    """Every setting: its key, environment variable, type, default and description."""
    out = [d for d in describe(Settings) if d["key"] != "stages"]
    for section, m in mounts.items():
        for d in describe(m.params, f"{section}."):
            name = d["key"].split(".", 1)[1]
            out.append(d | ({"default": m.defaults[name]} if name in m.defaults else {}))
    return out


def _read_toml(config_file: Path | None) -> tuple[Path | None, dict[str, Any]]:
    """The TOML file (`config_file`, else `$SURD_CONFIG`, else `./surd.toml` if present) and its values."""
    env_path = os.environ.get("SURD_CONFIG")
    path = config_file or (Path(env_path) if env_path else None)
    if path is None and Path("surd.toml").exists():
        path = Path("surd.toml")
    if path is None:
        return None, {}
    if not path.exists():
        raise SettingsError(f"config file {path} does not exist")
    if not path.is_file():
        raise SettingsError(f"config file {path} is not a file (a folder?): give a TOML file")
    try:
        return path, tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(f"config file {path} is not text (not UTF-8): give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def _stage_env(environ: Mapping[str, str], sections: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`SURD_<SECTION>__<PARAM>` of each stage section, as {section: {param: value}} (a JSON list or
    object is parsed; anything else stays a string for the parameter's model to validate)."""
    out: dict[str, dict[str, Any]] = {}
    for section in sections:
        prefix = f"{ENV_PREFIX}{section.upper()}__"
        for var, value in environ.items():
            if var.startswith(prefix):
                raw = value.strip()
                parsed = json.loads(raw) if raw[:1] in "[{" else value
                out.setdefault(section, {})[var[len(prefix) :].lower()] = parsed
    return out


def _merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Layers of nested values, each over the ones before it."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def build_settings(
    config_file: Path | None = None, mounts: Mapping[str, Mount] | None = None, **overrides: Any
) -> Settings:
    """The settings from (lowest first) defaults, a TOML file, `SURD_*` variables, `overrides`;
    each stage of `mounts` gets its parameters from its section. Unknown keys and bad values fail
    here, naming the key and the nearest valid ones."""
    mounts = mounts or {}
    clash = set(mounts) & set(Settings.model_fields)
    if clash:
        raise SettingsError(f"stage section(s) {', '.join(sorted(clash))} clash with settings of their own")
    keys = _keys(mounts)
    check_env_keys(dict(os.environ), keys, COMMAND_VARIABLES)
    path, toml = _read_toml(config_file)
    unknown = unknown_keys(toml, keys)
    if unknown:
        named = ", ".join(k + moved_note(k) for k in unknown)
        raise SettingsError(f"unknown setting(s) {named} in {path}" + did_you_mean(unknown[0], keys))
    try:
        env = EnvSettingsSource(Settings)()
    except ValueError as exc:  # a variable that should hold JSON (a list) and does not
        raise SettingsError(f"invalid settings in the environment: {str(exc).splitlines()[0]}") from None
    values = _merged(toml, env, _stage_env(os.environ, mounts), overrides)
    given = {sec: values.pop(sec) for sec in list(values) if sec in mounts}
    stages = {}
    for sec, m in mounts.items():
        try:
            stages[sec] = m.validate(given.get(sec) or {})
        except ValidationError as exc:
            raise SettingsError(format_error(exc, sec)) from None
    try:
        return Settings(**values, stages=stages)
    except ValidationError as exc:
        raise SettingsError(format_error(exc)) from None
