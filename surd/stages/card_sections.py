"""The dataset card's sections about a release's place in the chain of releases: whether it is held
and why, its frozen splits and what decontamination moved, what changed since its parent, and
per-source statistics with how each source was reached (surd.stages.card writes the rest)."""

from __future__ import annotations

from typing import Any

from surd.stages.splits import SPLITS


def held_banner(man: dict[str, Any]) -> list[str]:
    held = man.get("held")
    if not held:
        return []
    return [
        "> **Held by the release gate, not published.** A person approves it with "
        "`surd release approve " + man["release"] + " --reason …` after looking at why:",
        *[f"> - {r}" for r in held["reasons"]],
        "",
    ]


def splits_text(man: dict[str, Any]) -> list[str]:
    rows = man.get("splits") or {}
    shares = (man.get("settings") or {}).get("release", {})
    deco = man.get("decontaminated") or {}
    by_suite: dict[str, int] = {}
    for hit in deco.values():
        by_suite[hit["suite"]] = by_suite.get(hit["suite"], 0) + 1
    moved = man.get("decontaminated_rows", 0)
    return [
        "## Splits",
        "",
        "| " + " | ".join(SPLITS) + " |",
        "|" + "---|" * len(SPLITS),
        "| " + " | ".join(str(rows.get(s, 0)) for s in SPLITS) + " |",
        "",
        "Each sample's split is drawn from a hash of its prompt group (validation "
        f"{shares.get('validation_share', '?')}, test {shares.get('test_share', '?')} of the groups), so "
        "a sample keeps its split in every release, and near-duplicate prompts never straddle two "
        "splits. Train on `train` only; report on `test`.",
        "",
        f"Decontamination: {moved} rows are in `test` because a prompt of their group matches an "
        f"evaluation prompt ({len(deco)} matching rows"
        + (": " + ", ".join(f"{k} {v}" for k, v in sorted(by_suite.items())) if by_suite else "")
        + "; `split_reason` says which suite). The rule: the same text once normalised, or a shared run "
        "of 8 words (all of a shorter evaluation prompt).",
        "",
    ]


def changes_text(man: dict[str, Any]) -> list[str]:
    ch = man.get("changes") or {}
    if not man.get("parent"):
        return ["## What changed", "", "The first release: every row is new.", ""]
    removed = ", ".join(f"{k} {v}" for k, v in ch.get("removed", {}).items()) or "none"
    changed = ", ".join(f"{k} {v}" for k, v in ch.get("changed", {}).items()) or "none"
    return [
        f"## What changed since {man['parent']}",
        "",
        f"Added {ch.get('added', 0)}; removed by reason: {removed}; changed by column: {changed}. "
        "Every sample id is in `changes.parquet` (`surd release diff` compares any two releases).",
        "",
    ]


def sources_text(stats: dict[str, Any] | None) -> list[str]:
    if not stats:
        return []
    lines = [
        "## Sources",
        "",
        "| source | in | released | with a prompt | latest crawl |",
        "|---|---|---|---|---|",
    ]
    for name, s in stats["sources"].items():
        c = s.get("crawl") or {}
        how = (
            "region-blocked (HTTP 451)"
            if c.get("region_blocked")
            else "safe-for-work answers only"
            if c.get("sfw_only")
            else f"down since {c['down_since']}"
            if c.get("down_since")
            else "complete"
            if c.get("complete")
            else (c.get("stop_reason") or c.get("last_failure") or "not crawled")
        )
        share = s.get("with_prompt_share")
        lines.append(
            f"| {name} | {s['in']} | {s['released']} | "
            f"{'-' if share is None else f'{100 * share:.0f}%'} | {how} |"
        )
    return [*lines, "", "Every count, per source and reason, is in `stats.json`.", ""]
