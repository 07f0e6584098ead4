"""Explicit Arrow schemas of every stage table, with one schema version for the data directory.

Every stage row carries `status` (``ok`` or ``dropped``) and, when dropped, a `reason`
(``no_prompt``, ``http_404``, ``duplicate_of:<id>``, ``clip_prefers_complex``, ...). Rows are
never deleted: what left the path stays visible with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_VERSION = 1

OK = "ok"
DROPPED = "dropped"


def is_ok(table: pa.Table) -> pa.ChunkedArray:
    """True where a row's `status` is `ok` (a null status is not)."""
    return pc.fill_null(pc.equal(table.column("status"), OK), False)


STATUS_FIELDS = [  # the first columns of every stage table
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
]

RAW_ITEMS = pa.schema(
    [
        *STATUS_FIELDS,
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_item_id", pa.string(), nullable=False),
        pa.field("source_url", pa.string()),
        pa.field("image_url", pa.string()),
        pa.field("complex_prompt", pa.string()),
        pa.field("negative_prompt", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("model", pa.string()),
        pa.field("seed", pa.string()),
        pa.field("nsfw_level", pa.string()),
        pa.field("image_key", pa.string()),
        pa.field("meta_json", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
        pa.field("crawl_id", pa.string()),
    ]
)

CRAWL_PAGES = pa.schema(
    [
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("crawl_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("items", pa.int32()),
        pa.field("next_position", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
    ]
)


GENERATION = [  # how the image was made, as its source states it (null: the source does not say)
    pa.field("seed", pa.int64()),
    pa.field("steps", pa.int32()),
    pa.field("cfg_scale", pa.float32()),
    pa.field("sampler", pa.string()),
    pa.field("gen_width", pa.int32()),
    pa.field("gen_height", pa.int32()),
    pa.field("model_name", pa.string()),
    pa.field("model_hash", pa.string()),
    pa.field("creator", pa.string()),
    pa.field("source_nsfw", pa.string()),
    pa.field("source_created_at", pa.timestamp("us", tz="UTC")),
]

# Hugging Face `datasets`' Image storage: a release's `image` loads as a PIL image (the bytes are
# JPEG; `path` is null). Releases written before this held the bytes alone: `image_bytes` reads both.
IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


def image_bytes(value: bytes | dict[str, Any] | None) -> bytes | None:
    """A release row's image bytes, whether stored as Hugging Face's Image struct or plain bytes."""
    return value.get("bytes") if isinstance(value, dict) else value


def hf_dtype(field: pa.Field) -> str:
    """The `datasets` dtype of a release column (`image` for the Image struct)."""
    t = field.type
    if t == IMAGE:
        return "image"
    if pa.types.is_floating(t):
        return f"float{t.bit_width}"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    return {pa.string(): "string", pa.binary(): "binary", pa.bool_(): "bool"}.get(t, str(t))


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """`datasets`' own description of the columns (the `huggingface` key of the Parquet metadata):
    how `load_dataset("parquet", …)` knows that `image` is an image."""
    out: dict[str, Any] = {}
    for f in schema:
        dtype = hf_dtype(f)
        out[f.name] = {"_type": "Image"} if dtype == "image" else {"dtype": dtype, "_type": "Value"}
    return out


RELEASE_BASE = [  # every release's own columns; each declared stage adds its own after these
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("image", IMAGE),
    pa.field("simple_prompt", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("complex_prompt", pa.string()),
    pa.field("negative_prompt", pa.string()),
    pa.field("prompt_group", pa.string()),
    pa.field("split", pa.string()),  # train | validation | test, frozen (surd.stages.splits)
    pa.field("split_reason", pa.string()),  # why not its group's drawn split (decontaminated:<suite>)
    pa.field("source", pa.string()),
    pa.field("source_item_id", pa.string()),
    pa.field("source_url", pa.string()),
    pa.field("decision_id", pa.int64()),
    pa.field("decided_by_kind", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("licence_note", pa.string()),
    *GENERATION,
    pa.field("safety_level", pa.int8()),  # the source's NSFW label on one scale (surd.sources.safety)
    pa.field("prompt_profanity", pa.float32()),  # the complex prompt's (surd.stages.prompt_label)
]


def release_schema(stage_fields: list[pa.Field]) -> pa.Schema:
    """A release's schema: its own columns, then the declared stages' (in the declaration's order),
    with `datasets`' description of them (how `load_dataset` knows `image` is an image)."""
    fields = pa.schema([*RELEASE_BASE, *stage_fields])
    if len(set(fields.names)) != len(fields.names):
        dupes = sorted({n for n in fields.names if fields.names.count(n) > 1})
        raise ValueError(f"release column(s) {', '.join(dupes)} declared twice")
    return fields.with_metadata({"huggingface": json.dumps({"info": {"features": hf_features(fields)}})})


def embedding_schema(hidden_size: int) -> pa.Schema:
    """One layer of the per-layer LLM embeddings: one vector per sample, float16."""
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("prompt_sha1", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float16(), hidden_size), nullable=False),
        ]
    )


@dataclass(frozen=True)
class TableSpec:
    """What a table is written with: its schema and Parquet compression (JPEG bytes: none)."""

    schema: pa.Schema
    compression: str = "zstd"

    def __post_init__(self) -> None:
        if self.schema.names[:3] != ["sample_id", "status", "reason"]:
            raise ValueError("a stage table's first columns are sample_id, status, reason")


# The crawl's table; every other stage's schema is the stage's own, handed to a data root by the
# pipeline's declaration (surd.chain). Review decisions are not a table here: they live in the
# review database (surd/review/schema.py).
CRAWL_TABLES = {"raw_items": TableSpec(RAW_ITEMS)}
