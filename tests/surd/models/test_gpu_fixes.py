"""The GPU stages' speed-ups, checked on the CPU with the tiny profile and SmolLM2: the exact ones
give today's output (token for token, row for row, or within bf16 where only the order of a sum
changes); the options that are not exact say by how much they differ."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from surd import chain
from surd.models import tiny
from surd.models.preprocess import Preprocessor, Spec, is_truncated, resize_batch, to_tensor, tokenize
from tests.surd.models.test_models import _sharpened_blip


@pytest.mark.parametrize(
    "search,beams", [("transformers", 1), ("transformers", 3), ("lavis", 3), ("lavis", 2)]
)
def test_blip_cross_layout_and_prefix_reorder_give_the_same_tokens(search: str, beams: int) -> None:
    from surd.models.blip_decode import BlipDecoder

    model, proc = _sharpened_blip()
    prompt = proc.tokenizer(["a picture of"], return_tensors="pt").input_ids[0]
    size = model.config.vision_config.image_size
    px = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(3))
    eos = model.config.text_config.sep_token_id
    bias = model.text_decoder.cls.predictions.decoder.bias
    for eos_bias in (0.0, 2.5):  # captions that end at different steps within the batch
        with torch.no_grad():
            bias[eos] += eos_bias
        before = BlipDecoder(model, beams, 24, 6, search=search)
        before.contiguous_cross = before.prefix_reorder = False
        after = BlipDecoder(model, beams, 24, 6, search=search)
        assert after.contiguous_cross and after.prefix_reorder  # the default
        old, new = before.generate(px, prompt), after.generate(px, prompt)
        with torch.no_grad():
            bias[eos] -= eos_bias
        assert torch.equal(old, new), (search, beams, eos_bias)


def test_sdpa_vision_attention_is_close_and_its_captions_are_counted() -> None:
    from surd.models.blip_caption import BlipCaptioner
    from surd.models.blip_vision import use_sdpa
    from surd.stages.captions_params import CaptionParams

    model, proc = _sharpened_blip()
    size = model.config.vision_config.image_size
    px = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(5))
    cfg = CaptionParams(num_beams=3, max_length=20, min_length=5)
    with torch.inference_mode():
        eager = model.vision_model(pixel_values=px)[0]
        captions = BlipCaptioner(model, proc, cfg).caption(px)
        assert use_sdpa(model) == len(model.vision_model.encoder.layers)
        fused = model.vision_model(pixel_values=px)[0]
        fused_captions = BlipCaptioner(model, proc, cfg).caption(px)
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)  # close; bit equality is not promised
    same = sum(a == b for a, b in zip(captions, fused_captions, strict=True))
    print(f"sdpa vision: {same}/{len(captions)} captions the same on the CPU")
    assert same >= len(captions) - 1


def test_clip_tokenises_each_prompt_once_as_open_clip_does() -> None:
    _, _, tok = tiny.clip(0)
    texts = [
        "a cat",
        "",
        " ".join(["castle"] * 80),
        "ünïcödé 😀, (word:1.2) <lora:x:1> ",
        "x " * 74,  # 74 + start + end = 76: fits
        "x " * 75,  # 77: fits exactly
        "x " * 76,  # 78: cut, the end token last
    ]
    tokens, cut = tokenize(tok, texts)
    assert torch.equal(tokens, tok(texts))
    assert (
        cut.tolist()
        == [is_truncated(tok, t) for t in texts]
        == [False, False, True, False, False, False, True]
    )


def test_a_tokenizer_of_another_kind_is_called_as_before() -> None:
    calls: list[list[str]] = []

    class Other:
        context_length = 5

        def __call__(self, texts: list[str]) -> torch.Tensor:
            calls.append(texts)
            return torch.ones(len(texts), 5, dtype=torch.long)

        def encode(self, text: str) -> list[int]:
            return [7] * len(text.split())

    tokens, cut = tokenize(Other(), ["a b", "a b c d"])
    assert calls == [["a b", "a b c d"]] and tokens.shape == (2, 5) and cut.tolist() == [False, True]


def _rows(schema: pa.Schema, n: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for i in range(n):
        row: dict = {"an extra key": 1}
        for f in schema:
            t = f.type
            if i % 7 == 3 and f.name != "sample_id":
                continue  # missing: null
            if pa.types.is_list(t):
                v = rng.random(8).astype(t.value_type.to_pandas_dtype()) if i % 5 else None
                row[f.name] = v
            elif pa.types.is_floating(t):
                row[f.name] = float(rng.random())
            elif pa.types.is_integer(t):
                row[f.name] = int(rng.integers(0, 100))
            elif pa.types.is_boolean(t):
                row[f.name] = bool(i % 2)
            elif pa.types.is_binary(t):
                row[f.name] = bytes(rng.integers(0, 255, 16, dtype=np.uint8))
            elif pa.types.is_string(t):
                row[f.name] = f"{f.name}-{i}-ü"
            else:
                row[f.name] = None
        rows.append(row)
    return rows


def test_rows_become_columns_exactly_as_from_pylist() -> None:
    from storage.schemas import RAW_ITEMS
    from storage.tables import to_arrow
    from surd import chain

    rng = np.random.default_rng(0)
    tables = {"raw_items": RAW_ITEMS} | {n: t.schema for n, t in chain.PIPELINE.schemas().items()}
    for name, schema in tables.items():
        rows = _rows(schema, 40, rng)
        assert to_arrow(rows, schema).equals(pa.Table.from_pylist(rows, schema)), name
        assert to_arrow([], schema).equals(pa.Table.from_pylist([], schema)), name
    clip = tables["clip_scores"]
    full = [{"sample_id": f"s{i}", "image_embedding": rng.random(768).astype(np.float16)} for i in range(64)]
    assert to_arrow(full, clip).equals(pa.Table.from_pylist(full, clip))  # the stacked path


def _vectors(model, ids: list[list[int]], **kw) -> np.ndarray:
    from surd.models.llm_pool import LayerPooler

    pooler = LayerPooler(model, **kw)
    out = np.zeros((len(ids), len(pooler.layers), pooler.base.config.hidden_size), np.float32)
    for b in pooler.run(ids, batch_tokens=16):
        out[b.indices] = b.numpy()
    pooler.close()
    return out


# Floats from two code paths or two batchings: a CPU's kernels may sum in another order. float32:
# a few ulps (2**-23 each) of the largest values; float16 (stored vectors): one rounding step.
F32_RTOL, F32_ATOL = 2.0**-19, 1e-6
F16_RTOL, F16_ATOL = 2.0**-10, 2.0**-14

PROMPTS = ["a red cat", "two dogs", "a castle at night on a hill", "a cat", "blue sky", "x", "two dogs"]


def test_a_shared_first_token_computed_once_gives_todays_vectors_within_bf16() -> None:
    from surd.config import load_settings
    from surd.models import profiles

    model, tok = tiny.llama(0)
    ids = [[tok.bos_token_id, *x] for x in tok(PROMPTS)["input_ids"]]
    # two code paths (the BOS state computed once, in a batch of its own, vs within each prompt's
    # batch): float32 sums in another order, equal within a few ulps on any CPU's kernels
    np.testing.assert_allclose(
        _vectors(model, ids), _vectors(model, ids, shared_first=True), rtol=F32_RTOL, atol=F32_ATOL
    )

    loaded = profiles.llm(load_settings(embed={"llm": "smollm2-135m"}))  # real LLaMA weights
    bos = loaded.processor.bos_token_id
    ids = [[bos, *x] for x in loaded.processor(PROMPTS)["input_ids"]]  # as LLaMA's tokenizer starts
    today, once = _vectors(loaded.model, ids), _vectors(loaded.model, ids, shared_first=True)
    bf16 = 2.0**-8  # bf16's relative step
    assert np.all(np.abs(once - today) <= bf16 * np.abs(today) + 1e-3), np.abs(once - today).max()
    mixed = [ids[1], [*ids[1][1:], ids[0][1]]]  # one batch; not every prompt starts with it: no skip
    # ... so both run the same code on the same batch: bit for bit
    np.testing.assert_array_equal(
        _vectors(loaded.model, mixed), _vectors(loaded.model, mixed, shared_first=True)
    )


def test_each_distinct_prompt_is_embedded_once_and_parts_are_sized_by_bytes(tmp_path: Path) -> None:
    from storage.embeddings import EmbeddingStore, prompt_sha1
    from surd.config import load_settings
    from surd.stages.base import run_stage
    from surd.stages.embed import EmbedStage

    todo = [(f"s{i:02d}", p, prompt_sha1(p)) for i, p in enumerate(PROMPTS * 3)]
    stored = []
    for dedupe, part_bytes in ((False, 2**20), (True, 2**20)):
        root = tmp_path / f"d{int(dedupe)}"
        settings = load_settings(
            data_root=root, part_size=4, embed={"dedupe": dedupe, "part_bytes": part_bytes}
        )
        data = chain.PIPELINE.data_dir(root).open()
        stage = EmbedStage(settings, data, None, "tiny", todo)
        assert run_stage(stage).processed == len(todo)
        store = EmbeddingStore(data, stage.model_id)
        vecs, _ = store.read_layer(-1)
        assert set(vecs) == {t[0] for t in todo}
        stored.append((vecs, store))
    (plain, _), (once, store) = stored
    for sid in plain:  # other batches (each distinct prompt once): float16 vectors within one step
        np.testing.assert_allclose(plain[sid], once[sid], rtol=F16_RTOL, atol=F16_ATOL)
    assert len(store.parts()) == 1  # 1 MiB of vectors is every prompt here; part_size 4 was a floor

    settings = load_settings(data_root=tmp_path / "e", part_size=4, embed={"part_bytes": 2**20})
    stage = EmbedStage(settings, chain.PIPELINE.data_dir(tmp_path / "e").open(), None, "tiny", todo)
    from contextlib import ExitStack

    with ExitStack() as stack:
        stage.start(stack)
        row = len(stage.pooler.layers) * stage.pooler.base.config.hidden_size * 2
        assert stage.part_rows() == 2**20 // row
        stage.settings = settings.model_copy(update={"part_size": 10**7})
        assert stage.part_rows() == 10**7  # never fewer than part_size


def _jpeg(i: int, size: int = 512) -> bytes:
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_decoding_on_the_device_resizes_as_pillow_does_within_a_few_levels() -> None:
    """The device path's resize (torch, bicubic with antialias) against the Pillow path; the
    decode itself is torchvision's nvJPEG on a GPU, measured by benchmarks/gpu_check.py."""
    spec = Spec(size=224)
    blobs = [_jpeg(i) for i in range(4)]
    full = torch.stack(
        [
            torch.from_numpy(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1).copy())
            for b in blobs
        ]
    )
    device = resize_batch(full, spec.size)
    pillow = torch.stack([to_tensor(b, spec) for b in blobs])
    delta = (device.int() - pillow.int()).abs().float()
    print(f"device resize vs Pillow: mean |Δ| {delta.mean():.2f}, max {delta.max():.0f} levels")
    assert device.shape == pillow.shape == (4, 3, 224, 224) and device.dtype == torch.uint8
    assert delta.mean() < 2.0
    wide = full[:, :, 56:456, :]  # 400 × 512: the centre square is cropped first
    assert torch.equal(resize_batch(wide, 224), resize_batch(wide[:, :, :, 56:456].contiguous(), 224))


def test_workers_can_leave_the_images_for_the_device() -> None:
    spec = Spec(size=32)
    items = [(f"k{i}", _jpeg(i, 64), ("a", "b")) for i in range(5)]
    _, _, tok = tiny.clip(0)
    with Preprocessor(spec, 0, tokenizer=tok, chunk=2, pixels=False) as pre:
        got = list(pre.batches(items, 3))
    assert [k for k, _ in got] == [["k0", "k1", "k2"], ["k3", "k4"]]
    assert [d.blobs for _, d in got] == [[b for _, b, _ in items[:3]], [b for _, b, _ in items[3:]]]
    assert got[0][1].pixels.numel() == 0 and got[0][1].tokens.shape == (3, 2, 77)
    with Preprocessor(spec, 0, tokenizer=tok, chunk=2) as pre:
        decoded = list(pre.batches(items, 3))
    assert decoded[0][1].blobs is None and decoded[0][1].on(spec, torch.device("cpu")).shape == (3, 3, 32, 32)
