"""The release's settings (`SURD_RELEASE__*`): shards and where releases are published; the frozen
splits and what keeps evaluation prompts out of training; the gate a new release passes before it
is published; and the re-check of released items at their source. Apart from surd.settings, which
mounts them as its `release` section, to keep each module small."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSettings(_Part):
    """When a new release is held for a person (`surd release approve`) instead of published: each
    rule compares its statistics with the last published release's (surd.stages.gate)."""

    enabled: bool = True
    source_share_min: float = Field(
        0.10, ge=0, le=1, description="a source that gave at least this share of the last release..."
    )
    source_share_kept: float = Field(
        0.5, ge=0, le=1, description="...is held when it now gives less than this fraction of its share"
    )
    no_prompt_rise_points: float = Field(
        10.0, ge=0, le=100, description="a source's share of crawled items without a prompt rising this much"
    )
    drop_reason_rise_points: float = Field(
        20.0, ge=0, le=100, description="one drop reason's share of the new items rising this much"
    )
    min_items: int = Field(20, ge=1, description="a share is compared only over at least this many items")
    hold_on_region_block: bool = Field(True, description="a source answering HTTP 451 this rebuild")
    hold_on_sfw_only: bool = Field(True, description="a source answering safe-for-work only to all levels")
    split_share_points: float = Field(
        5.0, ge=0, le=100, description="a split's share of the rows moving this much"
    )
    decontaminated_jump: int = Field(
        10, ge=0, description="more rows moved out of train for contamination than the last release by this"
    )


class RecheckSettings(_Part):
    """The polite re-check of released items at their source (surd.stages.recheck): a budget per
    rebuild, so the latest release is covered over `rows / budget` rebuilds."""

    budget: int = Field(500, ge=0, le=1_000_000, description="items re-checked per rebuild (0: none)")
    confirm_after_s: float = Field(
        5.0, ge=0, le=3600, description="a 404/410 counts when a second request this much later agrees"
    )


class ReleaseSettings(_Part):
    shard_rows: int = Field(2000, ge=1)
    shard_bytes: int = Field(512_000_000, ge=1, description="image bytes per shard, at most")
    row_group_rows: int = Field(256, ge=1, description="rows per Parquet row group (streaming unit)")
    max_per_prompt_group: int | None = Field(None, ge=1, description="samples per complex prompt; None: all")
    location: str | None = Field(None, description="also publish releases here, e.g. s3://bucket/surd")
    endpoint_url: str | None = Field(None, description="an S3-compatible store (MinIO, ...)")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    validation_share: float = Field(
        0.05, ge=0, le=0.5, description="prompt groups in the validation split (by a hash of the group)"
    )
    test_share: float = Field(0.05, ge=0, le=0.5, description="prompt groups in the test split")
    split_salt: str = Field("surd-split-v1", description="changing it re-draws every split: don't")
    decontaminate_with: list[Path] = Field(
        [], description="more evaluation prompts to keep out of train: text files, one prompt a line"
    )
    decontaminate_ngram: int = Field(
        8, ge=3, le=64, description="a shared run of this many tokens (or a whole shorter prompt) is a match"
    )
    gate: GateSettings = GateSettings()
    recheck: RecheckSettings = RecheckSettings()

    @model_validator(mode="after")
    def _shares(self) -> ReleaseSettings:
        if self.validation_share + self.test_share >= 1:
            raise ValueError("validation_share + test_share must leave some train")
        return self
