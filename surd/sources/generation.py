"""Generation parameters as typed release columns, read from what each source returned (a raw
item row: its typed fields and `meta_json`). Unknown, missing or malformed values are null;
nothing is guessed. The columns are `storage.schemas.GENERATION`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from surd.sources.base import to_int

INT64 = 2**63


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(row.get("meta_json") or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(d: dict[str, Any], *keys: str) -> Any:
    """The first present, non-empty value of several spellings of one key."""
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return None


def _int(value: Any, limit: int = INT64) -> int | None:
    n = to_int(value)
    return n if n is not None and -limit <= n < limit else None


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _str(value: Any) -> str | None:
    return str(value).strip() or None if value is not None and not isinstance(value, (dict, list)) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _label(value: Any) -> str | None:
    """The source's NSFW label verbatim; null where it gives none (Civitai's 2023 level "None" is
    its word for no NSFW label: `safety_level` says 0, safe)."""
    text = _str(value)
    return None if text in (None, "None") else text


READS = ("width", "height", "model", "seed", "nsfw_level", "meta_json")  # the raw columns used here


def common(row: dict[str, Any]) -> dict[str, Any]:
    """What every source states in the raw item's own columns."""
    return {
        "seed": _int(row.get("seed")),
        "steps": None,
        "cfg_scale": None,
        "sampler": None,
        "gen_width": _int(row.get("width"), 2**31),
        "gen_height": _int(row.get("height"), 2**31),
        "model_name": _str(row.get("model")),
        "model_hash": None,
        "creator": None,
        "source_nsfw": _label(row.get("nsfw_level")),
        "source_created_at": None,
    }


def civitai(row: dict[str, Any]) -> dict[str, Any]:
    """Civitai's `meta`, in both of its spellings: the API's camelCase (`cfgScale`, `sampler`,
    `steps`) and the A1111 infotext keys (`CFG scale`, `Sampler`, `Steps`, `Model hash`)."""
    outer = _meta(row)
    meta: dict[str, Any] = _dict(outer.get("meta"))
    hashes = _dict(meta.get("hashes"))
    return common(row) | {
        "steps": _int(_first(meta, "steps", "Steps"), 2**31),
        "cfg_scale": _float(_first(meta, "cfgScale", "CFG scale", "cfg_scale")),
        "sampler": _str(_first(meta, "sampler", "Sampler")),
        "model_name": _str(_first(meta, "Model", "model")) or _str(row.get("model")),
        "model_hash": _str(_first(meta, "Model hash", "modelHash")) or _str(hashes.get("model")),
        "creator": _str(outer.get("username")),
        "source_created_at": _time(outer.get("createdAt")),
    }


def lexica(row: dict[str, Any]) -> dict[str, Any]:
    """Lexica's search and feed objects: seed, guidance, model, size (no steps, sampler or time)."""
    return common(row) | {"cfg_scale": _float(_meta(row).get("guidance"))}


def page_only(row: dict[str, Any]) -> dict[str, Any]:
    """A source whose pages state no generation settings (Stable Diffusion Online: size only)."""
    return common(row)
