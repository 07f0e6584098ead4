"""One typed settings object: `SURD_*` environment variables, an optional TOML file, defaults.

Nested sections use a double underscore in the environment (``SURD_IMAGES__SIZE=256``) and
tables in TOML (``[images] size = 256``). Unknown keys fail at start with the list of valid ones.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapter.config import TrainConfig
from surd.config_keys import (
    ENV_PREFIX,
    SettingsError,
    check_env_keys,
    describe,
    did_you_mean,
    format_error,
    unknown_keys,
    valid_keys,
)
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


class ImageSettings(_Section):
    size: int = Field(512, ge=16)
    resize_mode: Literal["center_crop", "pad"] = "center_crop"
    resample: Literal["bicubic", "lanczos", "bilinear"] = "bicubic"  # antialiased when downscaling
    min_side: int = Field(64, ge=1)
    max_pixels: int = Field(90_000_000, gt=0, description="decompression-bomb limit")
    max_bytes: int = Field(30_000_000, gt=0)
    encode_format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(92, ge=1, le=100)
    phash_max_distance: int = Field(
        8, ge=0, le=63, description="near-copy candidates: 64-bit dHash within this Hamming distance"
    )
    confirm_max_distance: int = Field(
        32, ge=0, le=256, description="a candidate is a near copy when its 256-bit DCT hash is within this"
    )
    zoom_max_distance: int = Field(5, ge=0, le=63, description="centre crops: zoomed dHash within this")
    zoom_confirm_max_distance: int = Field(32, ge=0, le=256, description="…confirmed by its DCT within")
    workers: int = Field(0, ge=0, description="decode/resize processes; 0 = all cores")
    requests_per_second: float = Field(10.0, gt=0, description="per image host")
    max_concurrency: int = Field(16, ge=1, description="per image host")


class CaptionSettings(_Section):
    backend: Literal["transformers", "lavis"] = Field(
        "transformers", description="lavis: LAVIS itself, in its own venv (make lavis-env)"
    )
    lavis_python: str = Field(".venv-lavis/bin/python", description="the LAVIS venv's python")
    search: Literal["lavis", "transformers", "generate"] = Field(
        "lavis",
        description="lavis: the beam search LAVIS ran (transformers 4.26 scoring, surd.models.blip_decode); "
        "transformers: transformers 5's scoring, same decoder; generate: transformers' own generate (slow)",
    )
    batch_size: int = Field(256, ge=1, description="images per model call (the benchmarked size)")
    workers: int | None = Field(
        None,
        ge=0,
        description="decode processes beside the model; default: all cores but one beside a GPU, 0 on CPU",
    )
    prompt: str = "a picture of "
    num_beams: int = Field(3, ge=1)
    max_length: int = Field(30, ge=1, description="tokens in total, prompt included (as LAVIS)")
    min_length: int = Field(10, ge=0, description="tokens in total, prompt included (as LAVIS)")
    vision_attention: Literal["eager", "sdpa"] = Field(
        "eager",
        description="sdpa: the vision tower on torch's fused attention (faster on a GPU, not bit-exact: "
        "benchmarks/gpu_check.py prints the captions that change)",
    )
    gpu_decode: bool = Field(
        False,
        description="on a GPU: decode the stored JPEGs there (torchvision/nvJPEG; pixels differ slightly)",
    )


class ClipSettings(_Section):
    batch_size: int = Field(1024, ge=1, description="images per model call (the benchmarked size)")
    gpu_decode: bool = Field(
        False,
        description="on a GPU: decode the stored JPEGs there (torchvision/nvJPEG; pixels differ slightly, "
        "benchmarks/gpu_check.py prints the keep decisions that flip)",
    )
    workers: int | None = Field(
        None,
        ge=0,
        description="decode processes beside the model; default: all cores but one beside a GPU, 0 on CPU",
    )
    near_duplicate_at: float | None = Field(
        None,
        gt=0,
        le=1,
        description="image cosine that makes a near duplicate; None: the profile's (docs: benchmarks)",
    )


class ReviewSettings(_Section):
    database_url: SecretStr | None = None  # may hold a password; default: SQLite under the data root
    lease_seconds: int = Field(900, ge=1)
    audit_share: float = Field(0.1, ge=0, le=1)
    reject_reasons: list[str] = "caption_wrong nsfw low_quality text_or_watermark duplicate other".split()
    auto_policy: Literal["none", "demo-margin-v1"] = "none"
    auto_min_margin: float = -0.5
    claim_batch: int = Field(10, ge=1, le=200, description="items a steward holds at once in the UI")
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


class ReleaseSettings(_Section):
    shard_rows: int = Field(2000, ge=1)
    shard_bytes: int = Field(512_000_000, ge=1, description="image bytes per shard, at most")
    row_group_rows: int = Field(256, ge=1, description="rows per Parquet row group (streaming unit)")
    max_per_prompt_group: int | None = Field(None, ge=1, description="samples per complex prompt; None: all")
    location: str | None = Field(None, description="also publish releases here, e.g. s3://bucket/surd")
    endpoint_url: str | None = Field(None, description="an S3-compatible store (MinIO, ...)")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None


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


class Settings(BaseSettings):
    """The effective settings of a run. Every output records `provenance()` of these."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_root: Path = Path("data")
    profile: Literal["tiny", "real"] = "real"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    part_size: int = Field(256, ge=1, description="items per written part")
    model_threads: int | None = Field(
        None,
        ge=1,
        description="torch (and OpenMP/MKL) threads of a model stage; default: this process's share of "
        "the cores (split between local Dask workers) less its decode workers",
    )
    lock_wait_s: float = Field(
        60.0, ge=0, description="how long a writer waits for another run writing the same table or release"
    )
    seed: int = 0
    crawl: CrawlSettings = CrawlSettings()
    sources: SourcesSettings = SourcesSettings()
    images: ImageSettings = ImageSettings()
    caption: CaptionSettings = CaptionSettings()
    clip: ClipSettings = ClipSettings()
    review: ReviewSettings = ReviewSettings()
    release: ReleaseSettings = ReleaseSettings()
    embed: EmbedSettings = EmbedSettings()
    adapter: AdapterSettings = AdapterSettings()
    deploy: DeploySettings = DeploySettings()
    scale: ScaleSettings = ScaleSettings()
    fault_kill_at: str | None = Field(
        None, description="testing only: 'table:n' SIGKILLs the process after n parts"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls, _TOML_DATA)

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

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.caption.min_length > self.caption.max_length:
            raise ValueError("caption.min_length must not exceed caption.max_length")
        return self

    def provenance(self) -> dict[str, Any]:
        """Settings as plain JSON with every secret masked; stored with every output."""
        return json.loads(self.model_dump_json())

    @property
    def review_database_url(self) -> str:
        if self.review.database_url is not None:
            return self.review.database_url.get_secret_value()
        return f"sqlite:///{self.data_root / 'review' / 'queue.db'}"


class _TomlSource(PydanticBaseSettingsSource):
    """Values from the TOML file: below the environment, above the defaults."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


_TOML_DATA: dict[str, Any] = {}


def describe_settings() -> list[dict[str, Any]]:
    """Every setting: its key, environment variable, type, default and description."""
    return describe(Settings)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from (lowest first) defaults, a TOML file, `SURD_*` variables, overrides.

    The TOML file is `config_file`, else `$SURD_CONFIG`, else `./surd.toml` if present.
    """
    check_env_keys(dict(os.environ), Settings, COMMAND_VARIABLES)
    env_path = os.environ.get("SURD_CONFIG")
    path = config_file or (Path(env_path) if env_path else None)
    if path is None and Path("surd.toml").exists():
        path = Path("surd.toml")
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise SettingsError(f"config file {path} does not exist")
        with path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
        unknown = unknown_keys(data, Settings)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)} in {path}"
                + did_you_mean(unknown[0], sorted(valid_keys(Settings)))
            )
    global _TOML_DATA
    _TOML_DATA = data
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_error(exc)) from None
    finally:
        _TOML_DATA = {}
