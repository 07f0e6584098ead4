"""Stewards judge an adapter's evaluation pairs, blinded: the paper judged semantic accuracy by
hand. Each pair shows the prompt and two images from the same seed; which one is the adapter's is
hidden (the side is drawn per pair, and image URLs name only the side).

A pair of one of the paper's Table 1/7 prompts asks the paper's own question of each image ("does
the image show …?"), so a human accuracy per prompt can be set beside the paper's hand-measured
one; any other pair asks which image follows the prompt better (adapter | baseline | tie). One
judgement per steward and pair, changeable until the steward has seen the run's results."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from surd.review.db import reader
from surd.review.schema import accuracy_judgments, judgments
from surd.review.session import Session, StewardSession

router = APIRouter(include_in_schema=False)
RUN_NAME = re.compile(r"^[A-Za-z0-9._()=,-]+$")


def _runs(root: Path) -> list[str]:
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


def _pairs(root: Path, run: str) -> list[dict[str, Any]]:
    if not RUN_NAME.match(run) or run not in _runs(root):
        raise HTTPException(404)
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
    """A run's evaluation pairs (404 for a run that has none)."""
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


@router.get("/judge", response_class=HTMLResponse)
def runs_page(s: StewardSession) -> Response:
    root = Path(s.settings.data_root)
    runs = [{"name": r, **{"pairs": len(_pairs(root, r))}} for r in _runs(root)]
    return s.render("judge_runs.html", runs=runs)


@router.get("/judge/{run}", response_class=HTMLResponse)
def next_pair(s: StewardSession, run: str) -> Response:
    pairs = _pairs(Path(s.settings.data_root), run)
    mine = _judged(s, run)
    todo = [p for p in pairs if p["pair_id"] not in mine]
    results = summary(s.engine, run, pairs)
    if not todo:
        return s.render("judge_done.html", run=run, results=results, accuracy=accuracy(s.engine, run, pairs))
    p = todo[0]
    return s.render(
        "judge_question.html" if p.get("question") else "judge.html",
        run=run,
        pair={k: p.get(k) for k in ("pair_id", "prompt", "suite", "question", "table")},
        done=len(mine),
        total=len(pairs),
    )


def _judged(s: Session, run: str) -> set[str]:
    a, j = accuracy_judgments, judgments
    with reader(s.engine) as conn:
        picks = conn.execute(sa.select(j.c.pair_id).where(j.c.run == run, j.c.steward == s.name)).scalars()
        answers = conn.execute(sa.select(a.c.pair_id).where(a.c.run == run, a.c.steward == s.name)).scalars()
        return {*picks, *answers}


@router.get("/judge/{run}/results", response_class=HTMLResponse)
def results_page(s: StewardSession, run: str) -> Response:
    """The run's results, once this steward's own picks are all in (and so final): live counts
    seen while judging would tell which side each pick's adapter was on."""
    pairs = _pairs(Path(s.settings.data_root), run)
    if not {p["pair_id"] for p in pairs} <= _judged(s, run):
        raise HTTPException(403, "results are shown once you have judged every pair of this run")
    results = summary(s.engine, run, pairs)
    return s.render("judge_done.html", run=run, results=results, accuracy=accuracy(s.engine, run, pairs))


@router.get("/judge/{run}/image/{pair_id}/{side}")
def image(s: StewardSession, run: str, pair_id: str, side: str) -> Response:
    if side not in ("left", "right"):
        raise HTTPException(404)
    root = Path(s.settings.data_root)
    pair = next((p for p in _pairs(root, run) if p["pair_id"] == pair_id), None)
    if pair is None:
        raise HTTPException(404)
    path = (root / "runs" / run / "eval" / pair[side]).resolve()
    if not path.is_relative_to((root / "runs" / run / "eval").resolve()) or not path.exists():
        raise HTTPException(404)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/judge/{run}")
def judge(
    s: StewardSession, run: str, csrf: str = Form(...), pair_id: str = Form(...), pick: str = Form(...)
) -> Response:
    s.check_csrf(csrf)
    pairs = _pairs(Path(s.settings.data_root), run)
    pair = next((p for p in pairs if p["pair_id"] == pair_id), None)
    if pair is None or pick not in ("left", "right", "tie") or pair.get("question"):
        raise HTTPException(422, "unknown pair or pick")
    _still_open(s, run, pairs)
    choice = "tie" if pick == "tie" else ("adapter" if pick == pair["adapter_side"] else "baseline")
    record(s.engine, run, pair_id, s.name, choice)
    return RedirectResponse(f"/judge/{run}", status_code=303)


@router.post("/judge/{run}/answer")
def answer(
    s: StewardSession,
    run: str,
    csrf: str = Form(...),
    pair_id: str = Form(...),
    left: str = Form("no"),
    right: str = Form("no"),
) -> Response:
    """The paper's question answered for both images of a pair (yes / no each)."""
    s.check_csrf(csrf)
    pairs = _pairs(Path(s.settings.data_root), run)
    pair = next((p for p in pairs if p["pair_id"] == pair_id), None)
    if pair is None or not pair.get("question") or {left, right} - {"yes", "no"}:
        raise HTTPException(422, "unknown pair, or not a question pair, or an answer other than yes / no")
    _still_open(s, run, pairs)
    shows = {"left": left == "yes", "right": right == "yes"}
    other = "right" if pair["adapter_side"] == "left" else "left"
    record_accuracy(s.engine, run, pair_id, s.name, shows[pair["adapter_side"]], shows[other])
    return RedirectResponse(f"/judge/{run}", status_code=303)


def _still_open(s: Session, run: str, pairs: list[dict[str, Any]]) -> None:
    if {p["pair_id"] for p in pairs} <= _judged(s, run):
        raise HTTPException(409, "your picks for this run are final: you have seen its results")
