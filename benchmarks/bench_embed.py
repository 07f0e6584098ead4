"""Per-layer mean-pooled LLaMA embeddings: prompts/s, tokens/s and the fraction of the card's
measured bf16 matmul rate, with random weights of the real architecture (no download).

    python benchmarks/bench_embed.py --preset llama-7b --prompts 20000
    python benchmarks/bench_embed.py --preset tiny --prompts 200        # CPU smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import device, matmul_tflops, peak_gb, report, timed

PRESETS = {  # the paper's LLaMA sizes: (layers, hidden, intermediate, heads)
    "llama-7b": (32, 4096, 11008, 32),
    "llama-13b": (40, 5120, 13824, 40),
    "tiny": (4, 64, 128, 4),
}


def build(preset: str, dev: torch.device) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaModel

    layers, hidden, inter, heads = PRESETS[preset]
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        attn_implementation="sdpa",
    )
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = LlamaModel(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-7b", choices=sorted(PRESETS))
    ap.add_argument("--prompts", type=int, default=20000)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--min-len", type=int, default=6)
    ap.add_argument("--max-len", type=int, default=24)
    ap.add_argument("--naive", type=int, default=0, help="also time N prompts one at a time")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder block")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from surd.models.llm_pool import LayerPooler

    dev = device()
    model = build(args.preset, dev)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.prompts,), generator=gen).tolist()
    seqs = [torch.randint(3, 32000, (n,), generator=gen).tolist() for n in lengths]
    pooler = LayerPooler(model, compile_blocks=args.compile)

    def run_all() -> None:
        for b in pooler.run(seqs, args.batch_tokens):
            b.numpy()  # waits for the pinned host copy, as the writer thread does

    run_all_warm = seqs[: min(len(seqs), 2000)]
    for b in pooler.run(run_all_warm, args.batch_tokens):
        b.numpy()
    seconds = timed(run_all)
    tokens = sum(lengths)
    params = sum(p.numel() for p in model.parameters()) - model.embed_tokens.weight.numel()
    tflops = 2 * params * tokens / seconds / 1e12
    peak = matmul_tflops()
    result = {
        "bench": "embed",
        "preset": args.preset,
        "prompts": args.prompts,
        "prompts_per_s": round(args.prompts / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "model_tflops": round(tflops, 1),
        "matmul_peak_tflops": round(peak, 1) if peak else None,
        "fraction_of_peak": round(tflops / peak, 3) if peak else None,
        "batch_tokens": args.batch_tokens,
        "compiled": args.compile,
        "peak_mem_gb": peak_gb(),
    }
    if args.naive:
        one = seqs[: args.naive]

        def naive() -> None:
            for s in one:
                pooler.pool(torch.tensor([s])).cpu()

        result["naive_prompts_per_s"] = round(args.naive / timed(naive), 1)
    pooler.close()
    report(result, args.out)
    return result


if __name__ == "__main__":
    main()
