"""Seeded random tiny models of the real classes, with tokenizers that work offline.

Same classes as the `real` profile (BLIP, open_clip CLIP, LLaMA, SD 1.5 UNet/VAE/text encoder),
so tests and the demo run the real code paths; only the weights differ. Builds are deterministic
for a given seed and take well under a second each.
"""

from __future__ import annotations

import gzip
import html
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

import surd.models  # noqa: F401  (torch/torchvision compatibility first)
from surd.models.vocab import WORDS


# ---- BLIP captioner --------------------------------------------------------------------
def blip_tokenizer() -> Any:
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate([*specials, *dict.fromkeys(WORDS), ",", "."])}
    tok = BertTokenizer(vocab=vocab, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def blip(seed: int = 0, image_size: int = 64) -> tuple[Any, Any]:
    """(BlipForConditionalGeneration, BlipProcessor) with ~100k random parameters."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = blip_tokenizer()
    cfg = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
            projection_dim=32,
        ),
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
            sep_token_id=tok.sep_token_id,
            eos_token_id=tok.sep_token_id,
        ),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(cfg).eval()
    # Weights at trained-like scales (seeded). At the default init (std 0.02 over 32 dims) the
    # vision states vanish under the final LayerNorm and every image gets the same caption.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, p.shape[-1] ** -0.5, generator=g)
            elif p.dim() > 2:
                p.normal_(0, 0.2, generator=g)
    proc = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tok,
    )
    return model, proc


# ---- CLIP (open_clip) ------------------------------------------------------------------
TINY_CLIP = "surd-tiny-clip"


def clip(seed: int = 0) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer); the tokenizer is CLIP's real BPE (ships in open_clip)."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        path = resources.files("surd.models") / "configs" / f"{TINY_CLIP}.json"
        open_clip.add_model_config(Path(str(path)))
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY_CLIP)


# ---- LLaMA -----------------------------------------------------------------------------
def llama_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS[i : i + 12]) for i in range(0, len(WORDS), 12)]
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def llama(seed: int = 0, layers: int = 4, hidden: int = 64) -> tuple[Any, Any]:
    """(LlamaModel, tokenizer): a 4-layer, 64-wide LLaMA with random weights."""
    from transformers import LlamaConfig, LlamaModel

    tok = llama_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaModel(cfg).eval(), tok


# ---- Stable Diffusion 1.5 pieces -------------------------------------------------------
@lru_cache(maxsize=1)
def _clip_bpe_files() -> tuple[dict[str, int], list[str]]:
    """CLIP's real BPE vocab and merges, rebuilt from the file open_clip ships."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path) as fh:
        pairs = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m.split()) for m in pairs)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    return {html.unescape(v): i for i, v in enumerate(vocab)}, pairs


def clip_text_tokenizer(cache_dir: Path) -> Any:
    """transformers' CLIPTokenizer with CLIP's real 49408-token vocabulary, offline."""
    from transformers import CLIPTokenizer

    out = cache_dir / "clip-tokenizer"
    if not (out / "vocab.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        vocab, merges = _clip_bpe_files()
        (out / "vocab.json").write_text(json.dumps(vocab))
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(out), model_max_length=77)


def stable_diffusion(seed: int, cache_dir: Path) -> dict[str, Any]:
    """UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer, DDPMScheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = clip_text_tokenizer(cache_dir)
    torch.manual_seed(seed)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()  # type: ignore[attr-defined]
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()  # type: ignore[attr-defined]
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=32,
        sample_size=32,
    ).eval()  # type: ignore[attr-defined]
    sched = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text,
        "tokenizer": tok,
        "scheduler": sched,
        "resolution": 32,
    }
