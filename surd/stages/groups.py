"""Prompt groups: samples generated from one complex prompt (one prompt's seeds, or the same prompt
on several sites) share a group, the first 16 hex digits of the sha1 of the prompt normalised
(whitespace collapsed, lower case). A release may cap the samples it takes per group
(`release.max_per_prompt_group`; off by default, as in the paper): the earliest accepted stay
(by decision id, so a later accept never displaces a released sample), the rest are held back
with the reason `prompt_group_cap` and counted."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from surd.ids import normalise_prompt

HELD_BACK = "prompt_group_cap"


def prompt_group(complex_prompt: str | None) -> str:
    """The group of a complex prompt: 16 hex digits of the sha1 of its normalised lower case."""
    return hashlib.sha1(normalise_prompt(complex_prompt).lower().encode()).hexdigest()[:16]


def cap_groups(rows: pa.Table, cap: int | None) -> tuple[pa.Table, pa.Table]:
    """(kept, held back): at most `cap` rows per `prompt_group`, the lowest `decision_id`s; kept
    in sample-id order. No cap: every row kept."""
    if cap is None or not len(rows):
        return rows, rows.slice(0, 0)
    ordered = rows.sort_by([("prompt_group", "ascending"), ("decision_id", "ascending")])
    groups = np.asarray(ordered.column("prompt_group").to_pylist(), dtype=object)
    at = np.arange(len(groups))
    first = np.r_[True, groups[1:] != groups[:-1]]
    rank = at - np.maximum.accumulate(np.where(first, at, 0))
    keep = pa.array(rank < cap)
    return ordered.filter(keep).sort_by("sample_id"), ordered.filter(pc.invert(keep))


def group_sizes(rows: pa.Table) -> dict[str, int]:
    """{'groups': distinct prompt groups, 'largest': the biggest group's rows, 'shared': rows in
    a group of two or more}."""
    if not len(rows):
        return {"groups": 0, "largest": 0, "shared": 0}
    counts = rows.group_by("prompt_group").aggregate([("prompt_group", "count")]).column(1).to_numpy()
    return {"groups": len(counts), "largest": int(counts.max()), "shared": int(counts[counts > 1].sum())}
