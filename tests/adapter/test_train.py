"""The SUR-adapter: equations on small tensors, gradients, a short real run, resume."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from adapter.checkpoints import latest_checkpoint
from adapter.config import TrainConfig
from adapter.model import AdapterConfig, SURAdapter, kl, loss_cp
from adapter.train import train
from storage.embeddings import EmbeddingStore, prompt_sha1
from surd import chain
from surd.models import tiny
from surd.sources.replay import synth_image

pytestmark = pytest.mark.slow  # real training runs: not in `make test-fast`


def test_g_is_zero_at_init_so_c_prime_is_scaled_v() -> None:
    a = SURAdapter(AdapterConfig(dim=8, llm_dim=16, eta=0.1))
    assert torch.count_nonzero(a.g.weight) == 0 and torch.count_nonzero(a.g.bias) == 0
    v = torch.randn(2, 5, 8)
    c_prime, q = a(v)
    torch.testing.assert_close(c_prime, 0.9 * v)
    torch.testing.assert_close(q, a.h3(v))


def test_kl_by_hand() -> None:
    p, q = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, float(np.log(3.0))]])
    # softmax(p) = [.5,.5], softmax(q) = [.25,.75]: KL = .5 ln 2 + .5 ln(2/3)
    assert float(kl(p, q, 1.0)) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), abs=1e-6)
    assert float(loss_cp(q, q, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_w0_is_seeded_fixed_and_saved() -> None:
    a, b = (SURAdapter(AdapterConfig(dim=8, llm_dim=16, w0_seed=3)) for _ in range(2))
    torch.testing.assert_close(a.w0, b.w0)
    assert "w0" in a.state_dict() and not any(p is a.w0 for p in a.parameters())


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rel")
    data = chain.PIPELINE.data_dir(root / "data").open()
    rel = root / "v0001"
    rel.mkdir()
    prompts = ["a red cat", "a blue car on a street", "two dogs on the beach", "a castle at night"]
    rows = [
        {
            "sample_id": f"s{i}",
            "image": {"bytes": synth_image(f"k{i}", 64)[0], "path": None},
            "simple_prompt": p,
            "complex_prompt": p + ", masterpiece, highly detailed, 8k",
        }
        for i, p in enumerate(prompts)
    ]
    pq.write_table(pa.Table.from_pylist(rows, chain.PIPELINE.release_schema()), rel / "shard-00000.parquet")
    (rel / "manifest.json").write_text('{"shards": [{"file": "shard-00000.parquet"}]}')  # what readers go by
    model, tok = tiny.llama(0)
    from surd.models.llm_pool import pooled_layers

    store = EmbeddingStore(data, "tiny-llama")
    store.write_part(
        [r["sample_id"] for r in rows], [prompt_sha1(p) for p in prompts], pooled_layers(model, tok, prompts)
    )
    return rel, store.dir


def _sd(tmp: Path) -> dict:
    return tiny.stable_diffusion(0, tmp)


def test_only_adapter_trains_and_loss_goes_down(tiny_release, tmp_path: Path) -> None:
    rel, emb = tiny_release
    parts = _sd(tmp_path)
    cfg = TrainConfig(steps=20, batch_size=4, lr=3e-3, checkpoint_every=100, lambda_llm=1.0, lambda_cp=1.0)
    train(parts, rel, emb, tmp_path / "run", cfg)
    assert all(not p.requires_grad for m in ("unet", "vae", "text_encoder") for p in parts[m].parameters())
    import json

    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_kill_and_resume_gives_the_same_weights(tiny_release, tmp_path: Path) -> None:
    rel, emb = tiny_release
    cfg = TrainConfig(steps=8, batch_size=2, lr=1e-3, checkpoint_every=4)
    train(_sd(tmp_path), rel, emb, tmp_path / "full", cfg)
    # "killed" after step 4: the checkpoint at 4 is all that survives, then a fresh process resumes
    train(_sd(tmp_path), rel, emb, tmp_path / "cut", TrainConfig(**{**cfg.__dict__, "steps": 4}))
    train(_sd(tmp_path), rel, emb, tmp_path / "cut", cfg)
    a = load_file(str(latest_checkpoint(tmp_path / "full") / "adapter.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "cut") / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_cached_latents_equal_encoding_every_step_flips_included(tiny_release, tmp_path: Path) -> None:
    import json

    rel, emb = tiny_release
    base = {"steps": 4, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 100, "random_flip": True}
    train(_sd(tmp_path), rel, emb, tmp_path / "cached", TrainConfig(**base, cache_latents=True))
    train(_sd(tmp_path), rel, emb, tmp_path / "every", TrainConfig(**base, cache_latents=False))
    read = lambda d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    for a, b in zip(read("cached"), read("every"), strict=True):
        assert a["step"] == b["step"]
        for k in ("loss", "loss_simple", "loss_llm", "loss_cp"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    # the flip is real: without it, the same seeds give other losses
    train(_sd(tmp_path), rel, emb, tmp_path / "noflip", TrainConfig(**{**base, "random_flip": False}))
    assert [r["loss_simple"] for r in read("noflip")] != [r["loss_simple"] for r in read("cached")]
    state = torch.load(latest_checkpoint(tmp_path / "cached") / "state.pt", weights_only=False)
    assert state["lr_scheduler"]["last_epoch"] == 4 and state["step"] == 4


def test_the_public_code_variant_trains_from_settings(tiny_release, tmp_path: Path) -> None:
    import json

    rel, emb = tiny_release
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, checkpoint_every=100, q_encoder_layers=2)
    train(_sd(tmp_path), rel, emb, tmp_path / "variant", cfg)
    ckpt = latest_checkpoint(tmp_path / "variant")
    assert json.loads((ckpt / "config.json").read_text())["adapter"]["q_encoder_layers"] == 2
    assert any(k.startswith("q_encoder.layers.1.") for k in load_file(str(ckpt / "adapter.safetensors")))


def test_main_trains_from_the_command_line_on_a_diffusers_folder(
    tiny_release, tmp_path: Path, capsys
) -> None:
    """`python -m adapter.train` outside the pipeline: a saved Stable Diffusion folder, a release,
    its embeddings; every training setting a flag (TrainConfig, their one definition)."""
    import json

    from adapter.train import main, parser

    rel, emb = tiny_release
    parts = _sd(tmp_path / "cache")
    model = tmp_path / "sd"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        parts[name].save_pretrained(model / name)
    flags = parser().format_help()
    assert all("--" + f.replace("_", "-") in flags for f in TrainConfig.model_fields)
    argv = [
        "--model",
        str(model),
        "--release",
        str(rel),
        "--embeddings",
        str(emb),
        "--out",
        str(tmp_path / "run"),
    ]
    argv += ["--steps", "3", "--batch-size", "2", "--resolution", "32", "--no-random-flip", "--lr", "0.001"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["samples"] == 4
    config = json.loads((latest_checkpoint(tmp_path / "run") / "config.json").read_text())["train"]
    assert config["random_flip"] is False and config["batch_size"] == 2 and config["lr"] == 0.001
    with pytest.raises(SystemExit):
        main([*argv, "--batch-size", "0"])  # out of TrainConfig's bounds: refused before any work
