"""Model stages with the tiny profile: the real classes, seeded random weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from surd.models import tiny
from surd.models.blip_caption import caption_images, strip_prompt
from surd.models.clip_score import score
from surd.models.llm_pool import pooled_layers
from surd.models.preprocess import is_truncated
from surd.stages.captions_params import CaptionParams
from surd.stages.clip import keep


@pytest.fixture(scope="module")
def pics() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for _ in range(3)]


def test_strip_prompt() -> None:
    assert strip_prompt("a picture of a red cat", "a picture of ") == "a red cat"
    assert strip_prompt("A Picture of  dogs ", "a picture of ") == "dogs"


def test_captions_batched_equal_one_by_one(pics: list[Image.Image]) -> None:
    model, proc = tiny.blip(0)
    cfg = CaptionParams(num_beams=2, max_length=12, min_length=6)
    batched = caption_images(model, proc, pics, cfg)
    single = [caption_images(model, proc, [p], cfg)[0] for p in pics]
    assert batched == single
    assert all(c and not c.startswith("a picture of") for c in batched)
    assert len(set(batched)) == len(pics)  # the image matters


def _sharpened_blip() -> tuple:
    """Tiny BLIP: its weights are at trained-like scales, so its captions depend on the image and,
    with a bias on EOS, end at different steps within one batch."""
    return tiny.blip(0)


@pytest.mark.parametrize(
    "beams,max_length,min_length", [(1, 20, 0), (1, 12, 8), (2, 15, 6), (3, 20, 0), (3, 30, 10), (4, 25, 0)]
)
def test_fast_decoder_equals_generate_token_for_token(beams: int, max_length: int, min_length: int) -> None:
    from surd.models.blip_decode import BlipDecoder, supports

    model, proc = _sharpened_blip()
    assert supports(model) is None
    enc = proc.tokenizer(["a picture of"], return_tensors="pt")
    eos = model.config.text_config.sep_token_id
    size = model.config.vision_config.image_size
    px = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))
    bias = model.text_decoder.cls.predictions.decoder.bias
    ends = set()
    for eos_bias in (0.0, 2.0, 3.0):
        with torch.no_grad():
            bias[eos] += eos_bias
        ref = model.generate(
            pixel_values=px,
            input_ids=enc.input_ids.repeat(8, 1),
            attention_mask=enc.attention_mask.repeat(8, 1),
            num_beams=beams,
            max_length=max_length,
            min_length=min_length,
        )
        got = BlipDecoder(model, beams, max_length, min_length).generate(px, enc.input_ids[0])
        with torch.no_grad():
            bias[eos] -= eos_bias
        assert got.shape == ref.shape and torch.equal(got, ref), (eos_bias, ref, got)
        ends |= {int(row.eq(eos).nonzero()[0]) if row.eq(eos).any() else -1 for row in got}
    assert len(ends) >= 3  # captions of different lengths, including ones cut at max_length


def test_clip_rule_exact_and_ties_keep() -> None:
    assert keep(0.5, 0.5) and keep(0.51, 0.49) and not keep(0.49, 0.51)


def test_clip_scores_match_hand_computation(pics: list[Image.Image]) -> None:
    model, pre, tok = tiny.clip(0)
    [s] = score(model, pre, tok, pics[:1], ["a cat"], ["a cat, masterpiece, 8k, trending"])
    with torch.no_grad():
        img = model.encode_image(pre(pics[0])[None], normalize=True)[0]
        t = model.encode_text(tok(["a cat", "a cat, masterpiece, 8k, trending"]), normalize=True)
        sims = t @ img
        p = torch.softmax(model.logit_scale.exp() * sims, 0)
    assert s["sim_simple"] == pytest.approx(float(sims[0]), abs=1e-5)
    assert s["p_simple"] == pytest.approx(float(p[0]), abs=1e-5)
    assert s["p_simple"] + s["p_complex"] == pytest.approx(1.0, abs=1e-6)
    # the zero-shot NSFW score: the same softmax over the two safety texts
    from surd.sources.safety import SAFETY_TEXTS

    with torch.no_grad():
        z = torch.softmax(
            model.logit_scale.exp() * (model.encode_text(tok(list(SAFETY_TEXTS)), normalize=True) @ img), 0
        )
    assert s["nsfw_score"] == pytest.approx(float(z[1]), abs=1e-5)


def test_truncation_flag() -> None:
    _, _, tok = tiny.clip(0)
    assert not is_truncated(tok, "a cat")
    assert is_truncated(tok, " ".join(["castle"] * 80))


def test_layer_k_is_block_k_output_masked_mean() -> None:
    model, tok = tiny.llama(0)
    prompts = ["a red cat", "two dogs running on the beach at night"]
    got = pooled_layers(model, tok, prompts)
    assert got.shape == (2, 4, 64)
    for i, p in enumerate(prompts):  # independent: blocks one by one, no padding at all
        ids = tok([p], return_tensors="pt").input_ids
        with torch.no_grad():
            h = model.embed_tokens(ids)
            pos = torch.arange(ids.shape[1])[None]
            rope = model.rotary_emb(h, pos)
            for k, layer in enumerate(model.layers):
                out = layer(h, position_embeddings=rope, position_ids=pos)
                h = out[0] if isinstance(out, tuple) else out
                np.testing.assert_allclose(got[i, k], h[0].mean(0).numpy(), atol=2e-3)


def test_left_and_right_padding_agree() -> None:
    model, tok = tiny.llama(0)
    prompts = ["a cat", "a very long prompt about a castle on a mountain"]
    right = pooled_layers(model, tok, prompts)
    tok.padding_side = "left"
    left = pooled_layers(model, tok, prompts)
    np.testing.assert_allclose(left, right, atol=1e-4)


def test_fast_preprocessing_matches_the_models_own(pics: list[Image.Image]) -> None:
    import io

    from surd.models.blip_caption import BlipCaptioner
    from surd.models.clip_score import ClipScorer
    from surd.models.preprocess import normalize, to_tensor

    big = pics[0].resize((512, 512))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    model, proc = tiny.blip(0)
    spec = BlipCaptioner(model, proc, CaptionParams()).spec
    fast = normalize(to_tensor(buf.getvalue(), spec)[None], spec, torch.device("cpu"), torch.float32)
    ref = proc(images=[big], return_tensors="pt")["pixel_values"]
    assert fast.shape == ref.shape and (fast - ref).abs().mean() < 0.02
    cmodel, pre, tok = tiny.clip(0)
    cspec = ClipScorer(cmodel, tok).spec
    fast = normalize(to_tensor(buf.getvalue(), cspec)[None], cspec, torch.device("cpu"), torch.float32)
    assert (fast - pre(big)[None]).abs().mean() < 0.02


def test_bucketed_pooling_equals_masked_reference() -> None:
    from surd.models.llm_pool import LayerPooler, equal_length_batches

    model, tok = tiny.llama(0)
    prompts = ["a red cat", "two dogs", "a castle at night on a hill", "a cat", "blue sky"]
    ids = tok(prompts)["input_ids"]
    out = np.zeros((len(prompts), 4, 64), dtype=np.float32)
    pooler = LayerPooler(model)
    for b in pooler.run(ids, batch_tokens=6):
        out[b.indices] = b.numpy()
    pooler.close()
    np.testing.assert_allclose(out, pooled_layers(model, tok, prompts), atol=2e-3)
    batches = equal_length_batches([3, 3, 3, 5, 1], batch_tokens=6)
    assert batches == [[4], [0, 1], [2], [3]]


def test_smollm2_profile_is_a_real_llama_offline() -> None:
    from surd.config import load_settings
    from surd.models import profiles

    loaded = profiles.llm(load_settings(embed={"llm": "smollm2-135m"}))
    assert type(loaded.model).__name__ == "LlamaModel" and loaded.model_id == "smollm2-135m"
    v = pooled_layers(loaded.model, loaded.processor, ["a cat sitting on a chair", "two dogs"])
    assert v.shape == (2, 30, 576) and np.isfinite(v).all()
    assert np.abs(v[0] - v[1]).max() > 1e-3  # real weights tell two prompts apart


def test_worker_pool_equals_inline_in_order_with_tokens() -> None:
    import io

    from surd.models.preprocess import Preprocessor, Spec, decode

    rng = np.random.default_rng(3)
    blobs = []
    for _ in range(21):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    _, _, tok = tiny.clip(0)
    long = "a castle, " * 60
    items = [
        (f"k{i}", b, (f"a cat {i}", long if i % 4 == 0 else f"a cat, best quality {i}"))
        for i, b in enumerate(blobs)
    ]
    ref = decode([(b, p) for _, b, p in items], Spec(32), tok)
    assert ref.tokens is not None and ref.truncated is not None
    assert torch.equal(ref.tokens[:, 0], tok([p[0] for _, _, p in items]))
    assert ref.truncated[:, 1].tolist() == [is_truncated(tok, p[1]) for _, _, p in items]
    assert ref.truncated[:, 1].sum() == 6 and not ref.truncated[:, 0].any()
    for workers in (0, 2):
        with Preprocessor(Spec(32), workers, tokenizer=tok, chunk=5) as pre:
            out = list(pre.batches(items, 8))
        assert [len(k) for k, _ in out] == [8, 8, 5]
        assert [k for keys, _ in out for k in keys] == [k for k, _, _ in items]
        assert torch.equal(torch.cat([d.pixels for _, d in out]), ref.pixels)
        assert torch.equal(torch.cat([d.tokens for _, d in out]), ref.tokens)
        assert torch.equal(torch.cat([d.truncated for _, d in out]), ref.truncated)


def _pool_in_a_daemon(out) -> None:  # type: ignore[no-untyped-def]
    import io

    from surd.models.preprocess import Preprocessor, Spec

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 48, 3), 200, dtype=np.uint8)).save(buf, format="JPEG")
    items = [(i, buf.getvalue(), ()) for i in range(9)]
    with Preprocessor(Spec(16), 2, chunk=2) as pre:
        got = list(pre.batches(items, 4))
    out.put(([k for keys, _ in got for k in keys], int(sum(d.pixels.shape[0] for _, d in got))))


def test_worker_pool_inside_a_daemonic_process_uses_threads() -> None:
    """Dask's worker processes are daemonic and may not start processes of their own."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_pool_in_a_daemon, args=(out,), daemon=True)
    proc.start()
    keys, n = out.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert keys == list(range(9)) and n == 9
