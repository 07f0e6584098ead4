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


def build(preset: str, dev: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
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
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = LlamaModel(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return model


def breakdown(pooler, seqs: list[list[int]], batch_tokens: int, full_s: float) -> dict:  # type: ignore[no-untyped-def]
    """Where a run's time goes: the model alone (hooks removed), the model with the pooling hooks
    (no host copy), the whole run (`full_s`: hooks, fp16 cast, pinned copy, host sync), and the
    model alone on the same tokens cut into full batches of one length (what the length buckets
    cost: their partial batches). Inputs are on the device first, so no timing holds an upload."""
    from surd.models.llm_pool import LayerPooler, equal_length_batches

    model, dev = pooler.model, pooler.device
    groups = equal_length_batches([len(s) for s in seqs], batch_tokens)
    ids = [torch.tensor([seqs[i] for i in idx], device=dev) for idx in groups]
    tokens = sum(x.numel() for x in ids)
    pooler.close()  # hooks off: the model alone

    def forward(batches: list[torch.Tensor]) -> None:
        with torch.inference_mode():
            for x in batches:
                pooler.base(input_ids=x, use_cache=False)

    forward(ids[:4])
    model_s = timed(lambda: forward(ids))
    length = 16
    rows = batch_tokens // length
    n_full = max(1, tokens // (rows * length))
    full = [torch.randint(3, 32000, (rows, length), device=dev) for _ in range(n_full)]
    forward(full[:2])
    full_tokens = sum(x.numel() for x in full)
    ideal_s = timed(lambda: forward(full)) * tokens / full_tokens
    hooked = LayerPooler(model)  # the blocks stay compiled if they were
    hooks_s = timed(lambda: [hooked.pool(x) for x in ids])
    hooked.close()
    small = sum(1 for x in ids if x.numel() < batch_tokens // 2)
    return {
        "batches": len(ids),
        "batches_under_half_budget": small,
        "tokens_in_those": sum(x.numel() for x in ids if x.numel() < batch_tokens // 2),
        "model_only_s": round(model_s, 3),
        "with_hooks_s": round(hooks_s, 3),
        "full_run_s": round(full_s, 3),
        "full_batches_one_length_s": round(ideal_s, 3),
        "share_hooks": round((hooks_s - model_s) / full_s, 3),
        "share_host_copy_and_cast": round((full_s - hooks_s) / full_s, 3),
        "share_partial_batches": round((model_s - ideal_s) / full_s, 3),
    }


def writer_rate(vectors: torch.Tensor, repeat: int = 3) -> float:
    """Prompts/s that the embedding store writes (one part of `vectors`, fp16, every layer)."""
    import tempfile

    from storage.embeddings import EmbeddingStore
    from storage.layout import DataDir

    arr = vectors.to(torch.float16).numpy()
    ids = [f"s{i:08d}" for i in range(arr.shape[0])]
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(DataDir(tmp), "bench")
        store.write_part(ids, ids, arr)  # meta, directories, page cache
        seconds = timed(lambda: store.write_part(ids, ids, arr), repeat)
    return arr.shape[0] / seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-7b", choices=sorted(PRESETS))
    ap.add_argument("--prompts", type=int, default=20000)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--min-len", type=int, default=6)
    ap.add_argument("--max-len", type=int, default=24)
    ap.add_argument("--naive", type=int, default=0, help="also time N prompts one at a time")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder block")
    ap.add_argument("--breakdown", action="store_true", help="also time the run's parts (see `breakdown`)")
    ap.add_argument("--writer", type=int, default=0, help="also time the store writing N prompts' vectors")
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
    if args.writer:
        cfg = model.config
        vectors = torch.randn(args.writer, cfg.num_hidden_layers, cfg.hidden_size)
        result["writer_prompts_per_s"] = round(writer_rate(vectors), 1)
    if args.breakdown:
        result["breakdown"] = breakdown(pooler, seqs, args.batch_tokens, seconds)
    pooler.close()
    report(result, args.out)
    return result


if __name__ == "__main__":
    main()
