"""The images of queued items, as the review shows them: whole, or (a flagged item the steward has
not revealed) a blurred rendering made here; thumbnails for the grid. A taken-down item's image is
gone (410) from every route, whatever is still stored. Revealed bytes and every rendering of a
flagged image carry `no-store`: no browser or proxy keeps them."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import Response

from storage.layout import DataDir
from surd import chain  # the images table is a declared stage's: its schema comes with the declaration
from surd.app.web.session import Session, StewardSession
from surd.review import queries, reveals
from surd.review.outcome import TAKEDOWN_ACTOR
from surd.review.shield import THUMB, flagged, thumbnail, veiled

router = APIRouter(include_in_schema=False)
TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _stored(s: Session, sample_id: str) -> tuple[bytes, bool, bool]:
    """(the stored image, whether the item is flagged, whether the review blurs it for this
    steward now); 404 for an item that is not queued or has no image, 410 for one a takedown
    covers."""
    item = queries.item(s.engine, sample_id)
    if item is None:  # only what entered the review queue
        raise HTTPException(404, f"no item {sample_id} in the queue")
    if str(item["final"].get("final_actor") or "").startswith(TAKEDOWN_ACTOR):
        raise HTTPException(410, "this image was taken down")
    images = DataDir(s.settings.data_root).table(chain.PIPELINE.stage_class("images").name)
    rows = images.lookup({sample_id}, ["image"])
    if sample_id not in rows or rows[sample_id]["image"] is None:
        raise HTTPException(404, f"item {sample_id} has no stored image")
    flag = flagged(item, s.settings.review)
    return rows[sample_id]["image"], flag, flag and sample_id not in s.remembered("revealed")


def _sent(body: bytes, media: str, private: bool) -> Response:
    cache = "private, max-age=3600" if private else "no-store"
    return Response(body, media_type=media, headers={"Cache-Control": cache})


@router.get("/image/{sample_id}")
def image(sample_id: str, s: StewardSession) -> Response:
    data, flag, veil = _stored(s, sample_id)
    if veil:
        return _sent(veiled(data, 512), "image/jpeg", private=False)
    return _sent(data, TYPES[s.settings.stage("images").encode_format], private=not flag)


@router.get("/thumb/{sample_id}")
def thumb(sample_id: str, s: StewardSession) -> Response:
    data, flag, veil = _stored(s, sample_id)
    if veil:
        return _sent(veiled(data, THUMB), "image/jpeg", private=False)
    return _sent(thumbnail(data), "image/jpeg", private=not flag)


@router.post("/reveal")
def reveal(
    s: StewardSession, csrf: str = Form(...), sample_id: str = Form(...), hide: str = Form("")
) -> Response:
    """The steward chose to see a flagged image (or to blur it again): from now on its routes send
    this session the image itself, never cached."""
    s.check_csrf(csrf)
    if hide:
        s.request.session["revealed"] = [x for x in s.remembered("revealed") if x != sample_id]
    else:
        s.remember("revealed", sample_id)
    reveals.log(s.engine, s.name, sample_id, "hide" if hide else "reveal")  # who saw what, and when
    return Response(status_code=204, headers={"Cache-Control": "no-store"})
