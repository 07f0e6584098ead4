"""Short human summaries of what a stage returned: what the CLI, the flows and logs print.

Results are data (dicts of plain values, printed as JSON with `--json`); these lines are for a
person and never show a Python repr.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any


def plain(r: Any) -> Any:
    """A summary as plain values: a dataclass (the pipeline's typed summaries) as its dict."""
    return asdict(r) if is_dataclass(r) and not isinstance(r, type) else r


def counts(by_key: dict[str, int]) -> str:
    """`{'a': 2, 'b': 1}` → `a=2, b=1` (sorted), or `none`."""
    return ", ".join(f"{k}={v}" for k, v in sorted(by_key.items())) or "none"


def describe_crawl(r: Any) -> str:
    r = plain(r)
    failed = f", {r['pages_failed']} failed" if r.get("pages_failed") else ""
    return (
        f"crawl {r['source']}: {r['pages_ok']} page(s){failed}, {r['items_written']} item(s) "
        f"({r['new_items']} new); ended: {r['stop_reason'] or 'unfinished'}"
    )


def describe_run(r: dict[str, Any]) -> str:
    """A batch stage's run (surd.stages.base.StageRun as a dict)."""
    dropped = sum(r["dropped"].values())
    tail = f" ({counts(r['dropped'])})" if dropped else ""
    if not r["processed"]:
        return f"{r['stage']}: nothing pending" + (f" ({r['idle']})" if r.get("idle") else "")
    return f"{r['stage']}: {r['processed']} processed, {r['kept']} kept, {dropped} dropped{tail}"


def describe_review(r: dict[str, Any]) -> str:
    q = r.get("queue") or {}
    queue = (
        f"; queue: {q['items']} item(s), {q['final']} final ({q['accepted']} accepted, "
        f"{q['rejected']} rejected), {q['remaining']} open"
        if "items" in q
        else ""
    )
    withdrawn = f", {r['withdrawn']} withdrawn (a stage dropped them since)" if r.get("withdrawn") else ""
    waiting = r.get("waiting") or {}
    wait = f"; waiting in a stage: {counts(waiting)}" if waiting else ""
    return (
        f"review: {r['enqueued']} enqueued{withdrawn}, {r['auto_decided']} decided by policy "
        f"{r['policy']}{queue}{wait}"
    )


def describe_release(r: dict[str, Any]) -> str:
    if not r.get("path"):
        moved = r.get("quarantined") or []
        held = r.get("held") or {}
        if held:
            return "release: none out yet; HELD: " + "; ".join(
                f"{v} ({' / '.join(w)})" for v, w in held.items()
            )
        return "release: no accepted samples yet" + (f" (moved aside: {', '.join(moved)})" if moved else "")
    verb = "created" if r["created"] else "unchanged; latest is"
    where = f", published to {r['published']}" if r.get("published") else ""
    said = f"; announced {', '.join(r['announced'])}" if r.get("announced") else ""
    waits = [v for v in r.get("waiting") or [] if v not in (r.get("announced") or [])]
    wait = (
        f"; the announcement of {', '.join(waits)} waits in the outbox (the next `release` flow sends it)"
        if waits
        else ""
    )
    held = r.get("held") or {}
    holds = (
        "; HELD, not published: "
        + "; ".join(f"{v} ({' / '.join(why)})" for v, why in held.items())
        + " (`surd release approve VERSION --reason …`)"
        if held
        else ""
    )
    moved = r.get("quarantined") or []
    aside = (
        f"; moved aside (no manifest.json: not a release; look inside, then delete): {', '.join(moved)}"
        if moved
        else ""
    )
    return f"release {verb} {r['release']}: {r['rows']} rows at {r['path']}{where}{said}{wait}{holds}{aside}"


def describe_recheck(r: dict[str, Any]) -> str:
    if not r.get("release"):
        return "recheck: no release out yet"
    ev = f" ({counts(r['evidence'])})" if r.get("evidence") else ""
    return (
        f"recheck of {r['release']}: {r['checked']} checked, {r['present']} present, {r['gone']} gone{ev}, "
        f"{r['unknown']} unknown (a transient answer); next from {r['position']} of {r['rows']}"
    )


def describe_embed(r: dict[str, Any]) -> str:
    return f"embed: {r['embedded']} prompt(s) embedded with {r['model_id']}"


def describe_train(r: dict[str, Any]) -> str:
    keys = [k for k in ("steps", "final_loss", "loss") if k in r]
    extra = ", ".join(f"{k}={_num(r[k])}" for k in keys)
    return f"train: run {r['run_dir']}" + (f" ({extra})" if extra else "")


def describe(stage: str, r: Any) -> str:
    """The summary of any stage's result by its name."""
    r = plain(r)
    if stage.startswith("crawl"):
        return describe_crawl(r)
    fn = {
        "review": describe_review,
        "release": describe_release,
        "recheck": describe_recheck,
        "embed": describe_embed,
        "train": describe_train,
    }.get(stage)
    if fn is not None:
        return fn(r)
    if isinstance(r, dict) and "processed" in r:
        return describe_run(r)
    if isinstance(r, dict):
        return f"{stage}: " + ", ".join(f"{k}={_num(v)}" for k, v in r.items() if _plain(v))
    return f"{stage}: {r}"


def _plain(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) or v is None


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
