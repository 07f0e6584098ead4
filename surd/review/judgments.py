"""Stewards' judgements of evaluation pairs, stored and summed: which image of a blinded pair
answers the prompt better (the paper's question for its Table 1/7 prompts), per run. The pages
that ask them are the web app's (surd.app.web.judge)."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.schema import accuracy_judgments, judgments

RUN_NAME = re.compile(r"^[A-Za-z0-9._()=,-]+$")


def runs(root: Path) -> list[str]:
    runs = root / "runs"
    return (
        sorted(
            p.name
            for p in runs.iterdir()
            if not p.name.startswith(".") and (p / "eval" / "pairs.jsonl").exists()
        )
        if runs.exists()
        else []
    )


class NoSuchRun(LookupError):
    """A run with no evaluation pairs (or a name that is not a run's)."""


def _pairs(root: Path, run: str) -> list[dict[str, Any]]:
    if not RUN_NAME.match(run) or run not in runs(root):
        raise NoSuchRun(run)
    path = root / "runs" / run / "eval" / "pairs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def record(engine: sa.Engine, run: str, pair_id: str, steward: str, choice: str) -> None:
    if choice not in ("adapter", "baseline", "tie"):
        raise ValueError("choice: adapter | baseline | tie")
    with engine.begin() as conn:
        conn.execute(
            judgments.delete().where(
                judgments.c.run == run, judgments.c.pair_id == pair_id, judgments.c.steward == steward
            )
        )
        conn.execute(
            judgments.insert().values(
                run=run, pair_id=pair_id, steward=steward, choice=choice, created_at=datetime.now(UTC)
            )
        )


def record_accuracy(
    engine: sa.Engine, run: str, pair_id: str, steward: str, adapter_shows: bool, baseline_shows: bool
) -> None:
    """One steward's answer to a pair's question, for each of its two images."""
    mine = sa.and_(
        accuracy_judgments.c.run == run,
        accuracy_judgments.c.pair_id == pair_id,
        accuracy_judgments.c.steward == steward,
    )
    with engine.begin() as conn:
        conn.execute(accuracy_judgments.delete().where(mine))
        conn.execute(
            accuracy_judgments.insert().values(
                run=run,
                pair_id=pair_id,
                steward=steward,
                adapter_shows=adapter_shows,
                baseline_shows=baseline_shows,
                created_at=datetime.now(UTC),
            )
        )


def accuracy(engine: sa.Engine, run: str, pairs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per prompt asked the paper's question: the % of judged images that show its semantics, for
    the adapter and the baseline, and how many image judgements each figure rests on."""
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(
                accuracy_judgments.c.pair_id,
                accuracy_judgments.c.adapter_shows,
                accuracy_judgments.c.baseline_shows,
            ).where(accuracy_judgments.c.run == run)
        ).all()
    prompt_of = {p["pair_id"]: p["prompt"] for p in pairs if p.get("question")}
    votes: dict[str, list[tuple[bool, bool]]] = {}
    for pair_id, a, b in rows:
        if pair_id in prompt_of:
            votes.setdefault(prompt_of[pair_id], []).append((bool(a), bool(b)))
    return {
        prompt: {
            "adapter": round(100 * sum(a for a, _ in v) / len(v), 2),
            "baseline": round(100 * sum(b for _, b in v) / len(v), 2),
            "images": len(v),
        }
        for prompt, v in votes.items()
    }


def human(engine: sa.Engine, run: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """What people judged on a run's pairs, as the evaluation report takes it (adapter.report)."""
    preference = {
        suite: {"adapter_share": v["adapter_share"], "judgements": v["adapter"] + v["baseline"]}
        for suite, v in summary(engine, run, pairs).items()
        if v["adapter_share"] is not None
    }
    return {"accuracy": accuracy(engine, run, pairs), "preference": preference}


def run_pairs(root: Path, run: str) -> list[dict[str, Any]]:
    """A run's evaluation pairs (`NoSuchRun` for a run that has none)."""
    return _pairs(root, run)


def summary(engine: sa.Engine, run: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per suite: judgements, the adapter's share of non-tie judgements, and CLIP's choice (proxy)."""
    with reader(engine) as conn:
        rows = conn.execute(
            sa.select(judgments.c.pair_id, judgments.c.choice).where(judgments.c.run == run)
        ).all()
    pairs = [p for p in pairs if not p.get("question")]  # those are asked the paper's question
    suite_of = {p["pair_id"]: p["suite"] for p in pairs}
    by_suite: dict[str, Counter[str]] = {}
    for pair_id, choice in rows:
        by_suite.setdefault(suite_of.get(pair_id, "?"), Counter())[choice] += 1
    out = {}
    for suite in dict.fromkeys(p["suite"] for p in pairs):
        c = by_suite.get(suite, Counter())
        decisive = c["adapter"] + c["baseline"]
        clip = [p["clip_choice_adapter"] for p in pairs if p["suite"] == suite]
        out[suite] = {
            "pairs": len(clip),
            "judgements": sum(c.values()),
            "adapter": c["adapter"],
            "baseline": c["baseline"],
            "tie": c["tie"],
            "adapter_share": round(c["adapter"] / decisive, 4) if decisive else None,
            "clip_choice_proxy": round(sum(clip) / len(clip), 4) if clip else None,
        }
    return out


def judged(engine: sa.Engine, run: str, steward: str) -> set[str]:
    """The pairs of `run` a steward has judged (a pick or an answer)."""
    a, j = accuracy_judgments, judgments
    with reader(engine) as conn:
        picks = conn.execute(sa.select(j.c.pair_id).where(j.c.run == run, j.c.steward == steward)).scalars()
        answers = conn.execute(sa.select(a.c.pair_id).where(a.c.run == run, a.c.steward == steward)).scalars()
        return {*picks, *answers}
