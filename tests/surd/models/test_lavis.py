"""The LAVIS caption backend: LAVIS in its own venv (`make lavis-env`), the main install untouched.

`.ci/run` builds that venv and sets CI_REQUIRE_LAVIS=1, so there this test must run; on a
machine without the venv it is skipped with the command that builds it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from storage.schemas import OK
from surd import chain
from surd.config import load_settings
from surd.sources.replay import synth_image

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

LAVIS_PY = Path(__file__).resolve().parents[3] / ".venv-lavis" / "bin" / "python"


@pytest.fixture
def lavis_python() -> Path:
    if not LAVIS_PY.exists():
        if os.environ.get("CI_REQUIRE_LAVIS") == "1":
            pytest.fail("CI_REQUIRE_LAVIS=1 but .venv-lavis is missing: make lavis-env")
        pytest.skip("LAVIS' own venv is not built here: make lavis-env")
    return LAVIS_PY


def test_the_main_install_has_no_lavis_and_a_modern_transformers() -> None:
    import transformers

    assert importlib.util.find_spec("lavis") is None
    assert int(transformers.__version__.split(".")[0]) >= 5


def test_lavis_venv_is_its_own_and_its_captioner_fills_the_table(lavis_python: Path, tmp_path: Path) -> None:
    versions = subprocess.run(
        [
            str(lavis_python),
            "-c",
            "import transformers, numpy; print(transformers.__version__, numpy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert versions[0].startswith("4.26") and versions[1].startswith("1.")  # LAVIS' pins, in its venv only

    from surd.stages.base import run_stage

    data = chain.PIPELINE.data_dir(tmp_path / "data").open()
    data.table("raw_items").write(  # what went on to the images stage
        [
            {"sample_id": f"s{i}", "status": OK, "source": "civitai", "source_item_id": str(i)}
            for i in range(3)
        ]
    )
    rows = []
    for i in range(3):
        row = dict.fromkeys(data.table("images").schema.names)
        row.update(sample_id=f"s{i}", status=OK, image=synth_image(f"k{i}", 64)[0])
        rows.append(row)
    data.table("images").write(rows)
    settings = load_settings(
        data_root=tmp_path / "data",
        profile="tiny",
        device="cpu",
        caption={
            "backend": "lavis",
            "lavis_python": str(lavis_python),
            "num_beams": 2,
            "max_length": 12,
            "min_length": 5,
        },
    )
    run = run_stage(chain.PIPELINE.build("captions", settings, data))
    assert run.processed == 3
    got = data.table("captions").read().to_pylist()
    assert {r["sample_id"] for r in got} == {"s0", "s1", "s2"}
    assert all(r["model_id"] == "lavis:blip_caption/base_coco (random weights)" for r in got)
    assert all((r["status"] == OK) == bool(r["simple_prompt"]) for r in got)
    assert importlib.util.find_spec("lavis") is None  # still not in the main venv


def test_lavis_search_equals_transformers_426_as_lavis_calls_it(lavis_python: Path, tmp_path: Path) -> None:
    """caption.search = "lavis" (the default) reproduces, token for token, the beam search that
    LAVIS ran: transformers 4.26's, in LAVIS' own venv, on the same weights and inputs."""
    import torch

    from surd.models.blip_decode import BlipDecoder
    from tests.surd.models.test_models import _sharpened_blip

    model, proc = _sharpened_blip()
    vc, tc = model.config.vision_config, model.config.text_config
    vision = {
        k: getattr(vc, k)
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "projection_dim",
            "layer_norm_eps",
            "hidden_act",
        )
    }
    text = {
        k: getattr(tc, k)
        for k in (
            "vocab_size",
            "hidden_size",
            "encoder_hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
            "bos_token_id",
            "pad_token_id",
            "sep_token_id",
            "eos_token_id",
            "layer_norm_eps",
            "hidden_act",
        )
    }
    enc = proc.tokenizer(["a picture of"], return_tensors="pt")
    px = torch.randn(8, 3, vc.image_size, vc.image_size, generator=torch.Generator().manual_seed(0))
    bias = model.text_decoder.cls.predictions.decoder.bias
    settings = [(2, 15, 6), (3, 20, 0), (3, 30, 10), (4, 25, 0)]
    lengths = set()
    for eos_bias in (0.0, 2.0, 3.0):
        with torch.no_grad():
            bias[tc.sep_token_id] += eos_bias
        runs = {f"{b}-{mx}-{mn}": dict(num_beams=b, max_length=mx, min_length=mn) for b, mx, mn in settings}
        ours = {
            k: BlipDecoder(model, **kw, search="lavis").generate(px, enc.input_ids[0])
            for k, kw in runs.items()
        }
        bundle = dict(
            vision=vision,
            text=text,
            state={k: v.clone() for k, v in model.state_dict().items()},
            pixel_values=px,
            input_ids=enc.input_ids.repeat(8, 1),
            attention_mask=enc.attention_mask.repeat(8, 1),
            runs=runs,
        )
        with torch.no_grad():
            bias[tc.sep_token_id] -= eos_bias
        torch.save(bundle, tmp_path / "in.pt")
        script = Path(__file__).with_name("blip426.py")
        subprocess.run(
            [str(lavis_python), str(script), str(tmp_path / "in.pt"), str(tmp_path / "out.pt")], check=True
        )
        theirs = torch.load(tmp_path / "out.pt")
        for key, ref in theirs.items():
            assert ours[key].shape == ref.shape and torch.equal(ours[key], ref), (
                eos_bias,
                key,
                ref,
                ours[key],
            )
            lengths.add(ref.shape[1])
    assert len(lengths) >= 4  # runs cut at max_length and runs where every image ended early
