"""Semantic near duplicates: CLIP image embeddings grouped in storage order (faiss), the first
kept, the others dropped as `near_duplicate_of:<id>`; across sources, across runs, and with the
inverted-file index that large runs use."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from storage.releases import manifest
from storage.schemas import OK
from surd import chain, pipeline
from surd.config import load_settings
from surd.ids import sample_id
from surd.review import queries, queue
from surd.stages import near_index
from surd.stages.near_index import NearGrouper
from surd.status import status

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from images import jpeg_512


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _near(rng: np.random.Generator, v: np.ndarray, noise: float) -> np.ndarray:
    w = v + noise * rng.standard_normal(v.shape).astype(np.float32)
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def test_the_first_stays_and_the_closest_kept_is_named() -> None:
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 2, 64)
    g = NearGrouper(64, 0.95, expected=10)
    out = g.decide(["a", "b", "a2"], np.stack([a, b, _near(rng, a, 0.02)]).astype(np.float16))
    assert [v.kept for v in out] == [True, True, False]
    assert out[2].of == "a" and out[2].similarity is not None and out[2].similarity >= 0.95
    assert out[0].similarity is None and out[1].similarity is not None and out[1].similarity < 0.5
    # a later batch (or a later run, through add_kept) sees what was kept before it
    c = _unit(rng, 1, 64)[0]
    later = g.decide(["b2", "c"], np.stack([_near(rng, b, 0.02), c]))
    assert [(v.kept, v.of) for v in later] == [(False, "b"), (True, None)]
    assert g.ids == ["a", "b", "c"]
    rerun = NearGrouper(64, 0.95, expected=10)
    rerun.add_kept(g.ids, np.stack([a, b, c]))
    assert rerun.decide(["a3"], _near(rng, a, 0.02)[None])[0].of == "a"


def test_the_inverted_file_index_finds_planted_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(near_index, "EXACT_MAX", 500)
    rng = np.random.default_rng(1)
    base = _unit(rng, 3000, 32)
    copies = _near(rng, base[:100], 0.03)
    vecs = np.concatenate([base, copies]).astype(np.float16)
    ids = [f"s{i}" for i in range(len(vecs))]
    g = NearGrouper(32, 0.95, expected=len(vecs), sample=vecs)
    assert not g.exact
    verdicts = [v for k in range(0, len(vecs), 512) for v in g.decide(ids[k : k + 512], vecs[k : k + 512])]
    dropped = {i: v.of for i, v in enumerate(verdicts) if not v.kept}
    assert dropped == {3000 + k: f"s{k}" for k in range(100)}  # every copy, nothing else


def test_too_few_vectors_to_train_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(near_index, "EXACT_MAX", 10)
    with pytest.raises(ValueError, match="needs at least"):
        NearGrouper(8, 0.9, expected=1000, sample=np.ones((5, 8), np.float16))


def between(after: str, before: str) -> list[str]:
    """The declared stages strictly between two (from the declaration, never spelled here)."""
    from surd import chain

    names = chain.PIPELINE.before(before)
    return names[names.index(after) + 1 :]


def _variant(blob: bytes) -> bytes:
    """Cropped off-centre, shrunk and enlarged again, re-encoded at a lower quality."""
    im = Image.open(io.BytesIO(blob)).convert("RGB")
    im = im.crop((40, 20, 480, 460)).resize((448, 448)).resize((512, 512))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def test_a_cropped_reencoded_resized_copy_on_another_site_is_grouped(tmp_path: Path) -> None:
    """The tiny profile's CLIP has random weights: on these pictures it puts the copy at 0.9925
    and the other picture at 0.971, so the test sets the threshold between (the tiny default,
    0.999, is for the demo's pictures; docs/benchmarks.md)."""
    s = load_settings(
        data_root=str(tmp_path / "data"), profile="tiny", device="cpu", near_duplicates={"at": 0.985}
    )
    data = chain.PIPELINE.data_dir(s.data_root).open()
    original, other = jpeg_512(0), jpeg_512(100)
    items = [("civitai", "11", original), ("lexica", "ab", _variant(original)), ("lexica", "cd", other)]
    ids = [sample_id(src, item) for src, item, _ in items]
    data.table("raw_items").write(
        [
            {
                "sample_id": sid,
                "status": OK,
                "source": src,
                "source_item_id": item,
                "complex_prompt": "a cat, 8k",
            }
            for sid, (src, item, _) in zip(ids, items, strict=True)
        ]
    )
    data.table("images").write(
        [
            {"sample_id": sid, "status": OK, "image": blob}
            for sid, (_, _, blob) in zip(ids, items, strict=True)
        ]
    )
    data.table("captions").write([{"sample_id": sid, "status": OK, "simple_prompt": "a cat"} for sid in ids])
    pipeline.run(s, "clip_scores")
    scores = {r["sample_id"]: r for r in data.table("clip_scores").iter_rows()}
    assert all(len(scores[sid]["image_embedding"]) == 32 for sid in ids)  # the tiny CLIP's width
    kept_by_clip = [sid for sid in ids if scores[sid]["status"] == OK]
    assert kept_by_clip == ids, "the tiny CLIP keeps all three (it prefers the short prompt)"

    for stage in between("clip_scores", "near_duplicates"):  # declared after CLIP (the detector)
        pipeline.run(s, stage)
    r = pipeline.run(s, "near_duplicates")
    assert (r.processed, r.kept, r.dropped) == (3, 2, {"near_duplicate_of": 1})
    assert pipeline.review(s).enqueued == 2  # the queue takes what the stage kept
    rows = {x["sample_id"]: x for x in data.table("near_duplicates").iter_rows()}
    assert rows[ids[0]]["status"] == OK and rows[ids[2]]["status"] == OK
    assert (
        rows[ids[1]]["reason"] == f"near_duplicate_of:{ids[0]}"
        and rows[ids[1]]["near_duplicate_of"] == ids[0]
    )
    assert rows[ids[1]]["similarity"] >= 0.985 > rows[ids[2]]["similarity"]
    engine = queue.connect(s.review_database_url)
    try:
        assert set(queries.queued_ids(engine)) == {ids[0], ids[2]}
        for sid in (ids[0], ids[2]):
            queue.decide(engine, sid, "alice", "accept")
    finally:
        engine.dispose()
    st = status(s, data)["stages"]
    near = st["near_duplicates"]
    assert near == {"in": 3, "out": 2, "dropped": {"near_duplicate_of": 1}, "pending": 0, "outside": 0}
    assert st["review"]["in"] == 2
    assert pipeline.run(s, "near_duplicates").processed == 0  # nothing new: nothing done

    rel = Path(pipeline.release(s))
    man = manifest(rel)
    shard = pq.read_table(rel / man["shards"][0]["file"]).sort_by("sample_id")
    got = dict(
        zip(shard.column("sample_id").to_pylist(), shard.column("near_duplicates").to_pylist(), strict=True)
    )
    assert got == {ids[0]: 1, ids[2]: 0}  # the original stands for its copy on the other site
    assert shard.schema.field("near_duplicates").type == pa.int32()
    assert man["counts"]["near_duplicates"] == 2 and man["counts"]["near_duplicates_dropped"] == 1
    assert "Near duplicates: 1 CLIP-kept images were dropped" in (rel / "README.md").read_text()
    profanity = shard.column("prompt_profanity")
    assert profanity.type == pa.float32() and all(0 <= p < 0.5 for p in profanity.to_pylist())
    assert man["model_ids"]["prompt_profanity"] == ["alt-profanity-check==1.9.1"]


def test_a_release_drops_a_near_duplicate_accepted_before_the_stage_ran(tmp_path: Path) -> None:
    """A data root from before this stage: its queue may hold (and have accepted) both copies."""
    s = load_settings(data_root=str(tmp_path / "data"), profile="tiny", device="cpu")
    data = chain.PIPELINE.data_dir(s.data_root).open()
    ids = [sample_id("civitai", "1"), sample_id("lexica", "2")]
    data.table("raw_items").write(
        [
            {"sample_id": i, "status": OK, "source": "civitai", "source_item_id": i, "complex_prompt": "x"}
            for i in ids
        ]
    )
    data.table("captions").write([{"sample_id": i, "status": OK, "simple_prompt": "a cat"} for i in ids])
    data.table("images").write([{"sample_id": i, "status": OK, "image": jpeg_512(3)} for i in ids])
    data.table("clip_scores").write(
        [{"sample_id": i, "status": OK, "p_simple": 0.9, "p_complex": 0.1} for i in ids]
    )
    engine = queue.connect(s.review_database_url)
    try:
        queue.enqueue(engine, [{"sample_id": i, "simple_prompt": "a cat"} for i in ids], 0.0)
        for i in ids:
            queue.decide(engine, i, "alice", "accept")
    finally:
        engine.dispose()
    for stage in between("clip_scores", "near_duplicates"):  # what went on through them
        data.table(stage).write([{"sample_id": i, "status": OK} for i in ids])
    data.table("near_duplicates").write(
        [
            {"sample_id": ids[0], "status": OK},
            {
                "sample_id": ids[1],
                "status": "dropped",
                "reason": f"near_duplicate_of:{ids[0]}",
                "near_duplicate_of": ids[0],
            },
        ]
    )
    man = manifest(Path(pipeline.release(s)))
    assert list(man["fingerprint"]) == [ids[0]] and man["held_back"] == {"near_duplicate_of": [ids[1]]}
