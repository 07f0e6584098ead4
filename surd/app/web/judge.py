"""Stewards judge an adapter's evaluation pairs, blinded: the paper judged semantic accuracy by
hand. Each pair shows the prompt and two images from the same seed; which one is the adapter's is
hidden (the side is drawn per pair, and image URLs name only the side).

A pair of one of the paper's Table 1/7 prompts asks the paper's own question of each image ("does
the image show …?"), so a human accuracy per prompt can be set beside the paper's hand-measured
one; any other pair asks which image follows the prompt better (adapter | baseline | tie). One
judgement per steward and pair, changeable until the steward has seen the run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from surd.app.web.session import Session, StewardSession
from surd.review.judgments import NoSuchRun, accuracy, judged, record, record_accuracy, runs, summary
from surd.review.judgments import run_pairs as _run_pairs


def _pairs(root: Path, run: str) -> list[dict[str, Any]]:
    try:
        return _run_pairs(root, run)
    except NoSuchRun:
        raise HTTPException(404) from None


router = APIRouter(include_in_schema=False)


@router.get("/judge", response_class=HTMLResponse)
def runs_page(s: StewardSession) -> Response:
    root = Path(s.settings.data_root)
    found = [{"name": r, **{"pairs": len(_pairs(root, r))}} for r in runs(root)]
    return s.render("judge_runs.html", runs=found)


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
    return judged(s.engine, run, s.name)


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
