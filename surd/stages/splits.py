"""Frozen splits: each released sample is in `train`, `validation` or `test`, and stays there.

A sample's split is a pure function of its prompt group (surd.stages.groups: the samples made from
one normalised complex prompt), drawn from a hash of the group and `release.split_salt` against
`release.validation_share` and `release.test_share` (5 % each by default: about 2,900 samples each
at SURD's size, enough for a steady held-out loss, 90 % left to train). So near-duplicate prompts
never straddle two splits, a sample keeps its split from release to release, and a new sample of a
known group joins its group's split. The one exception is decontamination (surd.stages.decontam):
a group with a sample whose complex or simple prompt matches an evaluation prompt leaves `train`
for `test`, every sample of it with the reason in `split_reason`; it is never trained on, and the
release's changes name it when that moves it."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from surd.release_settings import ReleaseSettings
from surd.stages.decontam import Decontaminator, evaluation_prompts

SPLITS = ("train", "validation", "test")
DECONTAMINATED = "decontaminated"  # split_reason: decontaminated:<suite>


def split_of(group: str, cfg: ReleaseSettings) -> str:
    """The split of a prompt group, by a hash of it: the same in every release."""
    u = int(hashlib.sha256(f"{cfg.split_salt}:{group}".encode()).hexdigest()[:16], 16) / 2**64
    if u < cfg.test_share:
        return "test"
    return "validation" if u < cfg.test_share + cfg.validation_share else "train"


def assign(rows: pa.Table, cfg: ReleaseSettings) -> tuple[pa.Array, pa.Array, dict[str, dict[str, Any]]]:
    """(split, split_reason) of every row, and {sample id: what it matched} of the rows whose own
    prompt matched an evaluation prompt (the others of their group follow them)."""
    deco = Decontaminator(evaluation_prompts(cfg.decontaminate_with), cfg.decontaminate_ngram)
    ids = rows.column("sample_id").to_pylist()
    groups = rows.column("prompt_group").to_pylist()
    hits: dict[str, dict[str, Any]] = {}
    dirty: dict[str, str] = {}  # group → the suite one of its prompts matched
    for sid, group, complex_, simple in zip(
        ids,
        groups,
        rows.column("complex_prompt").to_pylist(),
        rows.column("simple_prompt").to_pylist(),
        strict=True,
    ):
        for field, text in (("complex_prompt", complex_), ("simple_prompt", simple)):
            hit = deco.match(text)
            if hit is not None:
                hits[sid] = {"field": field, "suite": hit.suite, "prompt": hit.prompt, "how": hit.how}
                dirty.setdefault(group, hit.suite)
                break
    split = [("test" if g in dirty else split_of(g, cfg)) for g in groups]
    reason = [f"{DECONTAMINATED}:{dirty[g]}" if g in dirty else None for g in groups]
    return pa.array(split, pa.string()), pa.array(reason, pa.string()), hits


def counts(split: pa.Array) -> dict[str, int]:
    """Rows per split, every split named (0 where empty)."""
    got = {r["values"]: r["counts"] for r in split.value_counts().to_pylist()}
    return {s: int(got.get(s, 0)) for s in SPLITS}


def explain(rows: pa.Table, cfg: ReleaseSettings) -> dict[str, dict[str, Any]]:
    """{sample id: which evaluation prompt it matched, and how} of the rows whose own prompt
    matched (their groups' other rows are in `test` with the same reason, matching nothing)."""
    reasons = rows.column("split_reason")
    if not pc.any(pc.is_valid(reasons)).as_py():
        return {}
    return assign(rows.filter(pc.is_valid(reasons)), cfg)[2]
