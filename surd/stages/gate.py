"""The gate a new release passes before it is published and announced: its statistics
(surd.stages.stats) against the last published release's. A rule that breaks holds the release:
it is written and verified, but not published, not announced and not trained on, until a person
approves it (`surd release approve vNNNN --reason …`). The thresholds are `release.gate.*`.

The rules, each a line in the held release's manifest and card:
- a source that gave at least 10 % of the last release gives less than half of its share now;
- a source's crawled items without a prompt rise by 10 points or more (over at least 20 items);
- a source whose crawl found prompts last time finds none now (its parser no longer matches);
- one drop reason's share of the items new since the last release rises 20 points or more over
  its share of the last release's items;
- a source answered HTTP 451 (region-blocked) or safe-for-work only to an all-levels query;
- a sample changed split (frozen splits never move one but for decontamination), a split's share
  moves 5 points or more (releases of at least 400 rows), or the rows moved out of train for
  contamination grow by 10 or more.
"""

from __future__ import annotations

from typing import Any

from surd.release_settings import GateSettings
from surd.stages.splits import SPLITS


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _no_prompt(crawl: dict[str, Any]) -> float | None:
    seen = crawl.get("seen") or 0
    return None if not seen else 1 - (crawl.get("seen_with_prompt") or 0) / seen


def _source_rules(name: str, was: dict[str, Any], now: dict[str, Any], cfg: GateSettings) -> list[str]:
    out = []
    if was.get("share_of_release", 0) >= cfg.source_share_min and now.get("share_of_release", 0) < (
        cfg.source_share_kept * was["share_of_release"]
    ):
        out.append(
            f"{name} gave {_pct(was['share_of_release'])} of the last release and gives "
            f"{_pct(now.get('share_of_release', 0))} now"
        )
    c_was, c_now = was.get("crawl") or {}, now.get("crawl") or {}
    before, after = _no_prompt(c_was), _no_prompt(c_now)
    if (
        before is not None
        and after is not None
        and min(c_was.get("seen", 0), c_now.get("seen", 0)) >= cfg.min_items
        and 100 * (after - before) >= cfg.no_prompt_rise_points
    ):
        out.append(
            f"{name}: items without a prompt rose from {_pct(before)} to {_pct(after)} of those crawled"
        )
    if (
        c_was.get("seen_with_prompt", 0) > 0
        and c_now.get("seen", 0) > 0
        and c_now.get("seen_with_prompt") == 0
    ):
        out.append(f"{name}: its crawl found no prompt in {c_now['seen']} items (it found some last time)")
    return out


def _flags(name: str, now: dict[str, Any], cfg: GateSettings) -> list[str]:
    crawl = now.get("crawl") or {}
    out = []
    if cfg.hold_on_region_block and crawl.get("region_blocked"):
        out.append(f"{name} is region-blocked (HTTP 451): its items are missing from this rebuild")
    if cfg.hold_on_sfw_only and crawl.get("sfw_only"):
        out.append(f"{name} answered safe-for-work only to a query for every level")
    return out


def _drop_rules(was: dict[str, Any], now: dict[str, Any], cfg: GateSettings) -> list[str]:
    """Each drop reason's share of the items new since the last release against its share of the
    last release's items."""
    new = now.get("in", 0) - was.get("in", 0)
    if new < cfg.min_items or not was.get("in"):
        return []
    out = []
    for reason in sorted(set(now.get("dropped", {})) | set(was.get("dropped", {}))):
        before = was.get("dropped", {}).get(reason, 0) / was["in"]
        after = (now.get("dropped", {}).get(reason, 0) - was.get("dropped", {}).get(reason, 0)) / new
        if 100 * (after - before) >= cfg.drop_reason_rise_points:
            out.append(f"drop reason {reason}: {_pct(after)} of the {new} new items, {_pct(before)} before")
    return out


def _split_rules(was: dict[str, Any], now: dict[str, Any], moved: int, cfg: GateSettings) -> list[str]:
    out = []
    if moved:
        out.append(f"{moved} sample(s) changed split though splits are frozen")
    a, b = was.get("splits", {}), now.get("splits", {})
    rows_a, rows_b = sum(a.get("rows", {}).values()), sum(b.get("rows", {}).values())
    if min(rows_a, rows_b) >= 400:
        for s in SPLITS:
            x, y = a["rows"].get(s, 0) / rows_a, b["rows"].get(s, 0) / rows_b
            if abs(100 * (y - x)) >= cfg.split_share_points:
                out.append(f"split {s} moved from {_pct(x)} to {_pct(y)} of the rows")
    grew = b.get("decontaminated", 0) - a.get("decontaminated", 0)
    if grew >= cfg.decontaminated_jump and grew > 0:
        out.append(f"{grew} more rows were moved out of train as evaluation prompts")
    return out


def check(was: dict[str, Any] | None, now: dict[str, Any], moved: int, cfg: GateSettings) -> list[str]:
    """Why the release with statistics `now` is held (none: it goes out); `was`, the last
    published release's (None: the first release, held only for a blocked or filtered source);
    `moved`, its samples whose split is not their previous release's but for decontamination."""
    if not cfg.enabled:
        return []
    out = [r for name, s in now["sources"].items() for r in _flags(name, s, cfg)]
    if was is None:
        return out
    for name, s in now["sources"].items():
        out += _source_rules(name, was.get("sources", {}).get(name, {}), s, cfg)
    return out + _drop_rules(was, now, cfg) + _split_rules(was, now, moved, cfg)
