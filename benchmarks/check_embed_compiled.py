"""Does the compiled embedding path compute what the eager one does? The same prompts go through
one LLaMA-shaped model (random weights) three ways: eager in float32 (the reference), eager in
bf16 and with each decoder block `torch.compile`d in bf16 (the GPU default). Per layer it reports
the largest relative difference over the prompts, ‖a − b‖ / ‖b‖ of a prompt's pooled vector:
compiled vs eager, and each vs the float32 reference.

"Agree" means, on every layer, compiled and eager differ by no more than bf16 rounding does: at
most max(1e-2, 2 × eager's own distance from float32). bf16 has 8 significant bits (2⁻⁸ ≈ 4e-3 a
rounding), so 1e-2 is the usual bound for one bf16 result; the second term allows for rounding
that 32 layers accumulate, measured rather than assumed.

    python benchmarks/check_embed_compiled.py --preset llama-7b --prompts 512
    python benchmarks/check_embed_compiled.py --preset tiny --prompts 64     # CPU smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_embed import PRESETS, build
from common import device, report


def pooled(pooler, seqs: list[list[int]], batch_tokens: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """(N, L, H) float32 on the host, rows in input order, from the pooler's own batching."""
    from surd.models.llm_pool import equal_length_batches

    out: torch.Tensor | None = None
    for idx in equal_length_batches([len(s) for s in seqs], batch_tokens):
        got = pooler.pool(torch.tensor([seqs[i] for i in idx])).float().cpu()
        if out is None:
            out = torch.full((len(seqs), *got.shape[1:]), float("nan"))
        out[idx] = got
    assert out is not None and not torch.isnan(out).any(), "a prompt was never pooled"
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per layer, the largest over prompts of ‖a − b‖ / ‖b‖ (float64)."""
    a, b = a.double(), b.double()
    r = (a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)  # (N, L)
    return [float(x) for x in r.max(dim=0).values]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-7b", choices=sorted(PRESETS))
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from surd.models.llm_pool import LayerPooler

    dev = device()
    torch.manual_seed(args.seed)
    model = build(args.preset, dev, dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(6, 25, (args.prompts,), generator=gen).tolist()
    seqs = [torch.randint(3, 32000, (n,), generator=gen).tolist() for n in lengths]
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # a true float32 reference
        torch.backends.cudnn.allow_tf32 = False

    pooler = LayerPooler(model)
    ref = pooled(pooler, seqs, args.batch_tokens)
    pooler.close()
    low = torch.bfloat16
    model.to(low)  # the same weights, rounded once
    pooler = LayerPooler(model)
    eager = pooled(pooler, seqs, args.batch_tokens)
    pooler.close()
    pooler = LayerPooler(model, compile_blocks=True)
    compiled = pooled(pooler, seqs, args.batch_tokens)
    again = pooled(pooler, seqs, args.batch_tokens)  # the same inputs twice: a moving result is a race
    pooler.close()

    c_e, e_ref, c_ref = rel(compiled, eager), rel(eager, ref), rel(compiled, ref)
    bound = [max(1e-2, 2 * x) for x in e_ref]
    result = {
        "bench": "embed_compiled_vs_eager",
        "preset": args.preset,
        "prompts": args.prompts,
        "dtype": str(low).removeprefix("torch."),
        "layers": len(c_e),
        "max_rel_compiled_vs_eager": [round(x, 6) for x in c_e],
        "max_rel_eager_vs_fp32": [round(x, 6) for x in e_ref],
        "max_rel_compiled_vs_fp32": [round(x, 6) for x in c_ref],
        "worst_layer": 1 + max(range(len(c_e)), key=lambda k: c_e[k] / bound[k]),
        "compiled_repeatable": bool(torch.equal(compiled, again)),
        "agree": all(x <= b for x, b in zip(c_e, bound, strict=True))
        and bool(torch.isfinite(compiled).all()),
    }
    report(result, args.out)
    return result


if __name__ == "__main__":
    main()
