"""A release's statistics (`stats.json` in its folder, and a section of its card), per source: the
items in, released, and dropped by the first reason that dropped each; the share of items with a
complex prompt; the NSFW levels, caption lengths and CLIP margins of what was released; and how the
source was reached by its latest crawl (a complete pass, region-blocked, answering safe-for-work
only, down since when). The gate (surd.stages.gate) compares them with the last published release's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.layout import DataDir
from surd import chain
from surd.sources import SOURCES
from surd.stages.crawl import FINISHED
from surd.stages.splits import DECONTAMINATED, SPLITS

QUANTILES = (0.1, 0.5, 0.9)
RELEASED = ("source", "simple_prompt", "safety_level", "p_simple", "p_complex", "nsfw_detector", "split")


def _released(folder: Path) -> pa.Table:
    tables = []
    for shard in sorted(folder.glob("shard-*.parquet")):
        names = pq.read_schema(shard).names
        tables.append(pq.read_table(shard, columns=[c for c in (*RELEASED, "split_reason") if c in names]))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.quantile(np.asarray(values, dtype=np.float64), QUANTILES)
    return {f"p{int(k * 100)}": round(float(v), 4) for k, v in zip(QUANTILES, q, strict=True)}


def _crawl(data: DataDir, source: str) -> dict[str, Any]:
    """How the source's latest crawl pass went, from its checkpoint."""
    st = data.state(f"crawl-{source}")
    if not st:
        return {"crawled": False}
    seen = st.get("seen") or {}
    return {
        "crawled": True,
        "complete": bool(st.get("done") and st.get("stop_reason") in FINISHED),
        "stop_reason": st.get("stop_reason"),
        "last_failure": (st.get("last_failure") or {}).get("reason"),
        "region_blocked": bool(st.get("region_blocked")),
        "sfw_only": bool(st.get("sfw_only")),
        "down_since": st.get("down_since"),
        "finished_at": st.get("finished_at"),
        "seen": int(seen.get("items", 0)),
        "seen_with_prompt": int(seen.get("with_prompt", 0)),
    }


def _dropped(data: DataDir, raw: pa.Table) -> dict[str, Counter[str]]:
    """{source: Counter(first drop reason)} of every raw item (the crawl's own drops included)."""
    of_id = dict(zip(raw.column("sample_id").to_pylist(), raw.column("source").to_pylist(), strict=True))
    drops = chain.PIPELINE.first_drop(data, raw.column("sample_id").combine_chunks())
    out: dict[str, Counter[str]] = {s: Counter() for s in set(of_id.values())}
    for sid, (_, reason) in drops.items():
        out[of_id[sid]][str(reason).split(":")[0]] += 1
    return out


def compute(data: DataDir, folder: Path, man: dict[str, Any]) -> dict[str, Any]:
    """The statistics of the release written in `folder` (its manifest `man`)."""
    raw = data.table("raw_items").read(["sample_id", "source", "complex_prompt"])
    rel = _released(folder)
    dropped = _dropped(data, raw)
    src = raw.column("source").to_pylist()
    has_prompt = pc.fill_null(pc.greater(pc.utf8_length(raw.column("complex_prompt")), 0), False).to_pylist()
    rows_of = Counter(rel.column("source").to_pylist()) if len(rel) else Counter()
    out: dict[str, Any] = {"release": man["release"], "rows": len(rel), "sources": {}}
    for source in [s for s in SOURCES if s in set(src) | set(rows_of)] or list(SOURCES):
        n = sum(1 for s in src if s == source)
        mine = rel.filter(pc.equal(rel.column("source"), source)) if len(rel) else rel
        out["sources"][source] = {
            "in": n,
            "released": rows_of.get(source, 0),
            "share_of_release": round(rows_of.get(source, 0) / len(rel), 4) if len(rel) else 0.0,
            "with_prompt_share": round(
                sum(h for s, h in zip(src, has_prompt, strict=True) if s == source) / n, 4
            )
            if n
            else None,
            "dropped": dict(sorted(dropped.get(source, Counter()).items())),
            **_released_stats(mine),
            "crawl": _crawl(data, source),
        }
    out["dropped"] = dict(sorted(sum(dropped.values(), Counter()).items()))
    out["in"] = len(raw)
    out["splits"] = _splits(rel)
    return out


def _prompted(sources: list[str], has_prompt: list[bool], source: str) -> int:
    return sum(1 for s, h in zip(sources, has_prompt, strict=True) if s == source and h)


def _released_stats(rows: pa.Table) -> dict[str, Any]:
    if not len(rows):
        return {"nsfw_levels": {}, "caption_words": None, "clip_margin": None, "nsfw_detector": None}
    levels = Counter(str(v) for v in rows.column("safety_level").to_pylist())
    words = [len((t or "").split()) for t in rows.column("simple_prompt").to_pylist()]
    margin = []
    if "p_simple" in rows.column_names:
        margin = [
            a - b
            for a, b in zip(
                rows.column("p_simple").to_pylist(), rows.column("p_complex").to_pylist(), strict=True
            )
            if a is not None and b is not None
        ]
    det = (
        [v for v in rows.column("nsfw_detector").to_pylist() if v is not None]
        if "nsfw_detector" in rows.column_names
        else []
    )
    return {
        "nsfw_levels": dict(sorted(levels.items())),
        "caption_words": _quantiles(words),
        "clip_margin": _quantiles(margin),
        "nsfw_detector": _quantiles(det),
    }


def _splits(rel: pa.Table) -> dict[str, Any]:
    if "split" not in rel.column_names or not len(rel):
        return {"rows": {s: 0 for s in SPLITS}, "decontaminated": 0}
    got = Counter(rel.column("split").to_pylist())
    reasons = [r for r in rel.column("split_reason").to_pylist() if r and r.startswith(DECONTAMINATED)]
    return {"rows": {s: got.get(s, 0) for s in SPLITS}, "decontaminated": len(reasons)}
