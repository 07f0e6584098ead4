"""Releases: shards, manifest, reuse, verify, card, exports, readers, object storage."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from PIL import Image

from storage.layout import DataDir
from storage.releases import list_published, publish, stream, verify_files
from storage.schemas import IMAGE
from surd import chain, pipeline
from surd.config import load_settings
from surd.review import queue
from surd.settings import Settings
from surd.stages.release import create_release, manifest, releases, verify
from tests.conftest import copy_root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, released_demo: Path, replay) -> tuple[Path, dict]:
    """A data root taken through crawl → review (auto policy) by the real stages, no release yet:
    the session's demo root as it was before its release."""
    from surd.app.demo import demo_config

    root = copy_root(released_demo, tmp_path_factory.mktemp("rel") / "data")
    shutil.rmtree(root / "releases")
    shutil.rmtree(root / "state" / "outbox", ignore_errors=True)
    cfg = demo_config(root, replay)
    cfg["release"] = {"shard_rows": 8}
    return root, cfg


@pytest.fixture
def data(built, tmp_path: Path) -> tuple[Settings, DataDir]:
    root, cfg = built
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return load_settings(**{**cfg, "data_root": str(copy)}), chain.PIPELINE.data_dir(copy)


def test_release_manifest_card_and_round_trip(data) -> None:
    settings, d = data
    path = create_release(settings, d, {"raw_items": 74, "accepted": 38})
    man = manifest(path)
    assert man["release"] == "v0001" and man["parent"] is None and man["rows"] == len(man["fingerprint"])
    assert sum(s["rows"] for s in man["shards"]) == man["rows"] and all(s["rows"] <= 8 for s in man["shards"])
    assert verify(path) == []
    rows = [r for b in stream(path) for r in b.to_pylist()]
    assert len(rows) == man["rows"] and len({r["sample_id"] for r in rows}) == man["rows"]
    assert all(r["image"]["path"] is None for r in rows)  # Hugging Face's Image: bytes and a path
    assert all(Image.open(io.BytesIO(r["image"]["bytes"])).size == (512, 512) for r in rows[:3])
    only = next(stream(path, ["sample_id", "simple_prompt"]))
    assert only.schema.names == ["sample_id", "simple_prompt"]  # column projection
    card = (path / "README.md").read_text()
    assert "| 74 |" in card and "![prompt lengths](prompt_lengths.png)" in card
    assert Image.open(path / "prompt_lengths.png").size[0] > 300
    assert create_release(settings, d) is None  # nothing changed: no new release
    # the stage counts are a function, called only when a release is written (a no-op counts nothing)
    assert create_release(settings, d, lambda: pytest.fail("counted for a no-op")) is None
    # generation parameters, typed, from what each source returned (null where it says nothing)
    schema = pq.read_schema(path / man["shards"][0]["file"])
    assert (str(schema.field("seed").type), str(schema.field("cfg_scale").type)) == ("int64", "float")
    assert str(schema.field("source_created_at").type) == "timestamp[us, tz=UTC]"
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    civ = by_source["civitai"]
    assert any(r["steps"] and r["cfg_scale"] and r["sampler"] and r["creator"] for r in civ)
    assert any(r["source_created_at"] is not None for r in civ)
    assert all(r["steps"] is None and r["sampler"] is None for r in by_source.get("lexica", []))
    assert "Generation parameters known: seed " in card


def test_a_release_whose_images_are_plain_bytes_is_remade_and_still_read(data, tmp_path: Path) -> None:
    from surd.exports import export_release

    settings, d = data
    v1 = create_release(settings, d)
    for shard in manifest(v1)["shards"]:  # as this code wrote it before the Image type
        f = v1 / shard["file"]
        t = pq.read_table(f)
        k = t.schema.get_field_index("image")
        pq.write_table(t.set_column(k, "image", t.column("image").combine_chunks().field("bytes")), f)
    assert export_release(v1, tmp_path / "old", "imagefolder")["rows"] == manifest(v1)["rows"]
    assert Image.open(next((tmp_path / "old" / "train").glob("*.jpg"))).size == (512, 512)
    v2 = create_release(settings, d)
    assert v2 is not None and not any("reused_from" in s for s in manifest(v2)["shards"])
    assert pq.read_schema(v2 / manifest(v2)["shards"][0]["file"]).field("image").type == IMAGE


def test_a_release_with_older_columns_is_remade_with_these_and_none_of_its_shards_reused(data) -> None:
    settings, d = data
    v1 = create_release(settings, d)
    man = json.loads((v1 / "manifest.json").read_text())
    for shard in man["shards"]:  # as an older version of this code wrote it: no generation columns
        f = v1 / shard["file"]
        pq.write_table(pq.read_table(f).drop_columns(["seed", "steps"]), f)
    man["columns"] = [c for c in man["columns"] if c not in ("seed", "steps")]
    (v1 / "manifest.json").write_text(json.dumps(man))
    v2 = create_release(settings, d)
    assert v2 is not None and v2.name == "v0002"  # same samples, new columns: a new release
    assert not any("reused_from" in s for s in manifest(v2)["shards"])
    assert {"seed", "steps"} <= set(pq.read_schema(v2 / manifest(v2)["shards"][0]["file"]).names)


def test_verify_names_a_truncated_and_a_flipped_shard(data) -> None:
    settings, d = data
    path = create_release(settings, d)
    shards = manifest(path)["shards"]
    first, second = path / shards[0]["file"], path / shards[1]["file"]
    first.write_bytes(first.read_bytes()[:-100])
    raw = bytearray(second.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    second.write_bytes(bytes(raw))
    problems = verify(path)
    assert [p.split(":")[0] for p in problems] == [shards[0]["file"], shards[1]["file"]]


def test_next_release_reuses_unchanged_shards_and_states_its_difference(data) -> None:
    settings, d = data
    v1 = create_release(settings, d)
    m1 = manifest(v1)
    engine = queue.connect(settings.review_database_url)
    changing = [s for s in m1["shards"] if s["rows"] >= 2][-1]  # a shard of two rows or more
    last_shard_ids = pq.read_table(v1 / changing["file"], columns=["sample_id"]).column(0).to_pylist()
    edited = last_shard_ids[0]
    queue.decide(engine, edited, "alice", "accept", simple_prompt="a hand-edited caption")
    rejected = last_shard_ids[1]
    queue.decide(engine, rejected, "alice", "reject", reason="nsfw")
    v2 = create_release(settings, d)
    m2 = manifest(v2)
    assert m2["parent"] == "v0001" and m2["removed"] == [rejected] and m2["changed"] == [edited]
    reused = [s for s in m2["shards"] if "reused_from" in s]
    full = [s for s in m1["shards"] if s["rows"]]  # an empty split's file is written anew, not linked
    assert len(reused) == len(full) - 1  # all but the shard that held the two changes
    for s in reused:
        src = v1 / s["reused_from"].split("/")[1]
        assert (v2 / s["file"]).stat().st_ino == src.stat().st_ino  # hard link: not copied
    assert verify(v2) == [] and verify(v1) == []  # the parent is untouched
    rows = {
        r["sample_id"]: r
        for b in stream(v2, ["sample_id", "simple_prompt", "caption"])
        for r in b.to_pylist()
    }
    assert (
        rows[edited]["simple_prompt"] == "a hand-edited caption"
        and rows[edited]["caption"] != "a hand-edited caption"
    )
    assert rejected not in rows


def test_a_killed_writer_leaves_no_visible_release(data) -> None:
    settings, d = data
    d.releases_dir.mkdir(parents=True)
    half = d.releases_dir / ".tmp-v0001-dead"
    half.mkdir()
    (half / "shard-00000.parquet").write_bytes(b"half")
    assert releases(d) == []
    path = create_release(settings, d)
    assert path.name == "v0001" and not half.exists()


def test_shards_are_written_holding_one_part_and_one_row_group_of_images(data, tmp_path: Path) -> None:
    import tracemalloc

    from surd.stages.release import accepted_rows, schema
    from surd.stages.shards import write_shards
    from surd.stages.splits import SPLITS

    settings, d = data
    cfg = settings.release.model_copy(update={"shard_rows": 10, "row_group_rows": 3})
    rows = accepted_rows(settings, d)
    assert len(rows) and "image" not in rows.column_names  # metadata only, whatever the release size
    images, ids = d.table("images"), set(rows.column("sample_id").to_pylist())
    per_part = [
        sum(len(r["image"]) for r in images.iter_lookup(images.part_ids(p) & ids, ["image"]))
        for p in images.parts()
    ]
    group = 3 * max(len(r["image"]) for r in images.iter_lookup(ids, ["image"]))
    assert len(per_part) >= 3
    list(write_shards(d, rows.slice(0, 1), tmp_path, {}, cfg, schema()))  # warm: key caches, kernels
    for f in tmp_path.glob("*.parquet"):
        f.unlink()
    tracemalloc.start()
    try:
        shards = list(write_shards(d, rows, tmp_path, {}, cfg, schema()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert verify_files(str(tmp_path), shards) == []  # hashed as written = hashed from disk
    per_split = {s: rows.filter(pa.compute.equal(rows.column("split"), s)).num_rows for s in SPLITS}
    for split in SPLITS:  # each split its own run of shards, an empty one its one empty file
        mine = [sh for sh in shards if sh["split"] == split]
        assert [sh["file"] for sh in mine] == [f"shard-{split}-{k:05d}.parquet" for k in range(len(mine))]
        n = per_split[split]
        assert [sh["rows"] for sh in mine] == ([10] * (n // 10) + ([n % 10] if n % 10 else [])) or [0]
    back = [r for s in shards for r in pq.read_table(tmp_path / s["file"]).to_pylist()]
    assert sorted(r["sample_id"] for r in back) == rows.column("sample_id").to_pylist()  # each row, once
    assert all(r["sha256"] and r["image"] for r in back)
    train = next(sh for sh in shards if sh["split"] == "train" and sh["rows"] == 10)
    assert pq.ParquetFile(tmp_path / train["file"]).metadata.num_row_groups == 4  # 3 + 3 + 3 + 1
    # one part, and one row group of images a split, in memory, against all of them before
    assert peak < max(per_part) + len(SPLITS) * group + 64_000 < sum(per_part), (peak, per_part, group)
    (tmp_path / "x").mkdir()
    extra = rows.slice(0, 1).set_column(0, rows.schema.field(0), pa.array(["f" * 16]))
    with pytest.raises(RuntimeError, match="1 accepted samples have no stored image"):
        list(write_shards(d, pa.concat_tables([rows, extra]), tmp_path / "x", {}, cfg, schema()))


def test_exports_load_with_hugging_face_datasets(data, tmp_path: Path) -> None:
    from datasets import Image as HFImage
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    settings, d = data
    path = create_release(settings, d)
    expected = sorted(
        (r["simple_prompt"], r["complex_prompt"])
        for b in stream(path, ["simple_prompt", "complex_prompt"])
        for r in b.to_pylist()
    )
    shards = [str(path / s["file"]) for s in manifest(path)["shards"]]
    plain = load_dataset("parquet", data_files=shards, split="train")
    assert sorted(zip(plain["simple_prompt"], plain["complex_prompt"], strict=True)) == expected
    assert isinstance(plain[0]["image"], Image.Image) and plain[0]["image"].size == (512, 512)
    # the card: Hugging Face's own reader, its metadata, and the types it declares are the loaded ones
    card = DatasetCard.load(path / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "other" and meta["task_categories"] == ["text-to-image", "image-to-text"]
    # the Hub's conventions (DiffusionDB's card has them): who made what, the paper, the split's size
    assert meta["annotations_creators"] == ["machine-generated", "expert-generated"]
    assert meta["language_creators"] == ["found", "machine-generated"] and meta["multilinguality"] == [
        "monolingual"
    ]
    assert meta["task_ids"] == ["image-captioning"] and "arxiv:2305.05189" in meta["tags"]
    splits = {sp["name"]: sp for sp in meta["dataset_info"]["splits"]}
    assert set(splits) == {"train", "validation", "test"}
    assert {k: v["num_examples"] for k, v in splits.items()} == manifest(path)["splits"]
    assert sum(v["num_examples"] for v in splits.values()) == manifest(path)["rows"]
    files = sum((path / s["file"]).stat().st_size for s in manifest(path)["shards"])
    assert sum(v["num_bytes"] for v in splits.values()) > files // 2
    for section in ("## Personal and sensitive information", "## Bias", "## Limitations"):
        assert section in card.text, section
    from huggingface_hub import DatasetCardData

    assert DatasetCardData(**meta).to_dict()["task_ids"] == ["image-captioning"]  # the Hub's own type
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())  # type: ignore[method-assign]
    logging.getLogger("datasets").addHandler(handler)
    try:
        whole = load_dataset(str(path), cache_dir=str(tmp_path / "hf"))  # the card's three splits
    finally:
        logging.getLogger("datasets").removeHandler(handler)
    assert set(whole) == {"train", "validation", "test"}
    assert {k: len(v) for k, v in whole.items()} == manifest(path)["splits"]
    assert all(set(whole[k]["split"]) <= {k} for k in whole)  # each row in the split it says
    folder = whole["train"]
    assert not [m for m in seen if "Ignoring" in m or "malformed" in m], seen  # no warning about the card
    assert "None" not in set(plain["source_nsfw"])  # a source's missing label is null, not "None"
    declared = {f["name"]: f["dtype"] for f in meta["dataset_info"]["features"]}
    assert declared["image"] == "image" and set(declared) == set(plain.features)
    for name, feature in plain.features.items():
        got = "image" if isinstance(feature, HFImage) else feature.dtype
        assert got == declared[name], name
    assert "@inproceedings{zhong2023suradapter" in card.text and "| `seed` | int64 |" in card.text
    from surd.exports import export_release

    out = tmp_path / "export"
    assert export_release(path, out, "imagefolder")["rows"] == len(expected)
    # the sources' NSFW labels on one scale: a column, shares on the card, a filter on export
    from surd.exports import SafetyFilter
    from surd.sources.safety import source_level

    labels = plain.select_columns(["sample_id", "safety_level", "source_nsfw"])
    levels = {r["sample_id"]: r["safety_level"] for r in labels}
    raw = d.table("raw_items").lookup(list(levels), ["nsfw_level"])  # the label as the crawl stored it
    assert all(r["safety_level"] == source_level(raw[r["sample_id"]]["nsfw_level"]) for r in labels)
    assert set(levels.values()) - {None}, "the demo's sources label some rows"
    assert "## NSFW note" in card.text and "Rows by level: safe " in card.text
    zero_shot = plain.select_columns(["nsfw_score"])["nsfw_score"]
    assert all(v is not None and 0 <= v <= 1 for v in zero_shot)  # CLIP's zero-shot score, every row
    assert "method `clip-zero-shot-nsfw-v1`" in card.text and "scored rows" in card.text
    safe = export_release(path, tmp_path / "safe", "imagefolder", safety=SafetyFilter(0))
    assert safe["rows"] == sum(1 for v in levels.values() if v == 0)
    assert safe["left_out_by_nsfw"] == len(levels) - safe["rows"]
    lenient = export_release(
        path, tmp_path / "s2", "imagefolder", safety=SafetyFilter(0, keep_unlabelled=True)
    )
    assert lenient["rows"] == sum(1 for v in levels.values() if v in (0, None))
    folder = load_dataset("imagefolder", data_dir=str(out), split="train")
    assert sorted(zip(folder["text"], folder["prompt"], strict=True)) == expected
    assert folder[0]["image"].size == (512, 512)


def test_prompt2vec_export_reads_one_layer(data, tmp_path: Path) -> None:
    import torch

    from surd.exports import export_release

    settings, d = data
    path = create_release(settings, d)
    model_id = pipeline.embed(settings, str(path)).model_id
    from storage.embeddings import EmbeddingStore

    emb = EmbeddingStore(d, model_id).dir
    result = export_release(path, tmp_path / "x", "surd-adapter", emb, layer=2)
    table = torch.load(result["prompt2vec"])
    assert len(table) == result["prompts"] and all(v.shape == (576,) for v in table.values())  # SmolLM2
    with pytest.raises(ValueError, match="out of range"):
        export_release(path, tmp_path / "y", "surd-adapter", emb, layer=99)
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".tmp-*"))  # nothing half-made
    # a failed export over a good one leaves the good one whole
    before = sorted(p.relative_to(tmp_path / "x") for p in (tmp_path / "x").rglob("*"))
    with pytest.raises(ValueError, match="out of range"):
        export_release(path, tmp_path / "x", "surd-adapter", emb, layer=99)
    assert sorted(p.relative_to(tmp_path / "x") for p in (tmp_path / "x").rglob("*")) == before
    assert torch.load(result["prompt2vec"]).keys() == table.keys()


def test_an_export_never_replaces_what_is_not_an_export(data, tmp_path: Path) -> None:
    from surd.exports import ExportRefused, export_release, made_from

    settings, d = data
    path = create_release(settings, d)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    with pytest.raises(ExportRefused, match="not a SURD export"):
        export_release(path, mine, "imagefolder")
    assert (mine / "thesis.tex").read_text() == "months of work"
    export_release(path, tmp_path / "out", "imagefolder")
    again = export_release(path, tmp_path / "out", "imagefolder")  # an earlier export: replaced
    assert again["rows"] == manifest(path)["rows"]
    assert export_release(path, mine, "imagefolder", force=True)["rows"] == again["rows"]  # asked for
    assert not (mine / "thesis.tex").exists()
    logged = made_from(Path(d.root), {path.name})
    assert [Path(r["path"]).name for r in logged] == ["out", "out", "notes"]


def test_reading_one_layer_needs_no_other_layer_file(data) -> None:
    from storage.embeddings import EmbeddingStore, read_layer

    settings, d = data
    path = create_release(settings, d)
    model_id = pipeline.embed(settings, str(path)).model_id
    emb = EmbeddingStore(d, model_id).dir
    before, _ = read_layer(emb, 3)
    for f in emb.glob("part-*/layer-*.parquet"):
        if f.name != "layer-03.parquet":
            f.unlink()  # gone: a reader that touched them would fail
    after, k = read_layer(emb, 3)
    assert k == 3 and len(after) == manifest(path)["rows"]
    assert all((after[i] == before[i]).all() for i in before)


@pytest.fixture(scope="module")
def s3():
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    opts = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir("surd-releases")
    yield opts, fs
    server.stop()


def test_publish_to_an_s3_compatible_store(data, s3) -> None:
    opts, fs = s3
    settings, d = data
    path = create_release(settings, d)
    url = publish(path, "s3://surd-releases/surd", **opts)
    assert url == "s3://surd-releases/surd/v0001"
    assert list_published("s3://surd-releases/surd", **opts) == ["v0001"]
    man = json.loads(fs.cat("surd-releases/surd/v0001/manifest.json"))
    assert verify_files("surd-releases/surd/v0001", man["shards"], fs) == []
    remote = [
        r for b in stream("surd-releases/surd/v0001", ["sample_id"], filesystem=fs) for r in b.to_pylist()
    ]
    assert len(remote) == man["rows"]
    fs.pipe("surd-releases/surd/v0001/" + man["shards"][0]["file"], b"not parquet")
    assert verify_files("surd-releases/surd/v0001", man["shards"], fs)[0].startswith(man["shards"][0]["file"])


@pytest.mark.slow  # worker processes or the CLI in a subprocess
def test_embedding_workers_split_the_work_and_agree(data, tmp_path: Path) -> None:
    """Two worker processes (one per GPU on a GPU machine; here two CPU processes) write their
    own parts; the layer read back equals a single worker's, and meta records what was loaded."""
    import numpy as np

    from storage.embeddings import EmbeddingStore, meta, read_layer

    settings, d = data
    path = create_release(settings, d)
    other = tmp_path / "other"
    shutil.copytree(d.root, other)
    two = load_settings(
        **{
            **json.loads(settings.model_dump_json()),
            "data_root": str(other),
            "embed": {"llm": "tiny", "workers": 2},
        }
    )
    one = load_settings(**{**json.loads(settings.model_dump_json()), "embed": {"llm": "tiny"}})
    r1 = pipeline.embed(one, str(path))
    n1, model_id = r1.embedded, r1.model_id
    n2 = pipeline.embed(two, str(other / "releases" / path.name)).embedded
    assert n1 == n2 == manifest(path)["rows"]
    a, _ = read_layer(EmbeddingStore(d, model_id).dir, -1)
    b, _ = read_layer(EmbeddingStore(chain.PIPELINE.data_dir(other), model_id).dir, -1)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-3) for k in a)
    assert (
        meta(EmbeddingStore(chain.PIPELINE.data_dir(other), model_id).dir)["revision"]
        == "seeded-random(seed=0)"
    )
    assert pipeline.embed(two, str(other / "releases" / path.name)).embedded == 0  # nothing left


def test_rebuild_publishes_each_release_once(data, tmp_path: Path) -> None:
    settings, _ = data
    target = tmp_path / "published"
    s = load_settings(**{**json.loads(settings.model_dump_json()), "release": {"location": str(target)}})
    first = pipeline.release_info(s)
    assert first.created and first.published.endswith("/v0001")
    shard = target / "v0001" / manifest(Path(first.path))["shards"][0]["file"]
    stamp = shard.stat().st_mtime_ns
    again = pipeline.release_info(s)
    assert not again.created and shard.stat().st_mtime_ns == stamp  # not uploaded twice
    assert list_published(str(target)) == ["v0001"]


def test_a_cap_per_prompt_group_holds_back_the_later_samples_and_the_counts_add_up(data) -> None:
    from surd.status import status

    settings, d = data
    v1 = create_release(settings, d)
    groups = pq.read_table(v1 / manifest(v1)["shards"][0]["file"], columns=["prompt_group"])
    sizes = manifest(v1)["prompt_groups"]
    assert sizes["largest"] >= 2 and len(groups) > 0  # the demo has a prompt made twice
    capped = settings.model_copy(
        update={"release": settings.release.model_copy(update={"max_per_prompt_group": 1})}
    )
    v2 = create_release(capped, d)
    assert v2 is not None
    man = manifest(v2)
    held = man["held_back"]["prompt_group_cap"]
    assert man["rows"] == sizes["groups"] and len(held) == manifest(v1)["rows"] - sizes["groups"]
    assert set(held) <= set(man["removed"]) and not set(held) & set(man["fingerprint"])
    assert verify(v2) == []
    st = status(capped, d)["stages"]["release"]
    assert st["dropped"] == {"prompt_group_cap": len(held)} and st["pending"] == 0
    assert st["in"] == st["out"] + len(held)
    assert "held back" in (v2 / "README.md").read_text()
    assert create_release(capped, d) is None  # the same samples, the same cap: nothing to do
    assert create_release(settings, d) is not None  # the cap lifted: a new release with them all


def test_nothing_accepted_makes_no_release(tmp_path: Path) -> None:
    from surd.config import load_settings

    settings = load_settings(data_root=str(tmp_path / "data"))
    d = chain.PIPELINE.data_dir(tmp_path / "data").open()
    assert create_release(settings, d) is None and releases(d) == []  # an empty queue, no tables


def test_a_release_folder_without_a_manifest_is_moved_aside_never_in_the_way(
    data, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `vNNNN/` without manifest.json (a hand copy, a half restore) is not a release: the next
    release moves it aside, says so, and takes the next number; before, every later release
    failed as an internal error."""
    from surd.app.cli import main

    settings, d = data
    v1 = pipeline.release_info(settings)
    stray = d.releases_dir / "v0002"
    shutil.copytree(Path(v1.path), stray)
    (stray / "manifest.json").unlink()
    engine = queue.connect(settings.review_database_url)
    try:
        [item] = queue.claim(engine, "alice", 1, 600, queue.Filters(margin_max=0.7))
        queue.decide(engine, item["sample_id"], "alice", "accept")
        queue.decide(engine, item["sample_id"], "bob", "accept")  # an audit item needs two
    finally:
        engine.dispose()
    monkeypatch.setenv("SURD_DATA_ROOT", str(d.root))
    monkeypatch.setenv("SURD_PROFILE", "tiny")
    with pytest.raises(SystemExit) as done:
        main(["release", "create"])
    got = capsys.readouterr()
    assert done.value.code in (0, None), got.err
    assert (
        "release created v0003" in got.out
        and "moved aside" in got.out
        and "v0002 → .quarantined-v0002-" in got.out
    )
    assert [p.name for p in releases(d)] == ["v0001", "v0003"] and not list(d.releases_dir.glob(".tmp-*"))
    assert list(d.releases_dir.glob(".quarantined-v0002-*"))


def test_verify_checks_every_release_by_default(
    data, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from surd.app.cli import main

    settings, d = data
    v1 = create_release(settings, d)
    shard = v1 / manifest(v1)["shards"][0]["file"]
    engine = queue.connect(settings.review_database_url)
    try:
        [item] = queue.claim(engine, "alice", 1, 600, queue.Filters(margin_max=0.7))
        queue.decide(engine, item["sample_id"], "alice", "accept")
        queue.decide(engine, item["sample_id"], "bob", "accept")
    finally:
        engine.dispose()
    assert create_release(settings, d).name == "v0002"
    damaged = bytearray(shard.read_bytes())  # v0001's copy damaged; v0002 (the latest, which may
    damaged[100:164] = b"\0" * 64  # share the shard by hard link) keeps its own sound bytes
    tmp = shard.with_name("damaged.tmp")
    tmp.write_bytes(bytes(damaged))
    tmp.replace(shard)
    monkeypatch.setenv("SURD_DATA_ROOT", str(d.root))
    said = {}
    for argv, code in ((["release", "verify"], 1), (["release", "verify", "--latest"], 0)):
        with pytest.raises(SystemExit) as done:
            main(argv)
        said[len(argv)] = capsys.readouterr()
        assert (done.value.code or 0) == code, (argv, said)
    assert "v0001: " in said[2].err and "v0002: ok" in said[2].out  # all checked, the bad one named
    assert said[3].out.strip() == "v0002: ok"
