"""One prepared GPU run that proves (or disproves) the GPU stages' speed-ups, in one call.

Every change is timed against today's path A/B/A/B in this process, on the same inputs, with both
medians and their ratio; every exact change says whether its output stayed the same, every option
that is not exact says by how much it differs. Each stage is also run as a stage (its Parquet in,
its Parquet out, the writer included) beside the model alone. The card's bf16 matmul rate and
clocks are read before and after, and the disk's write rate once.

A global time budget (`--budget-s`) governs: a section starts only when the time it needs is left,
else it is recorded as skipped. Every result is one JSON line, printed and appended to `--out` and
flushed at once, so a run cut short still returns what finished. Models have random weights of
the real architectures (BLIP base, CLIP ViT-B/32, LLaMA 7B and 13B): nothing is downloaded.

    python benchmarks/gpu_check.py --out $OUT/gpu_check.jsonl            # on the GPU machine
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke.jsonl         # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from common import card, device, matmul_tflops, sync  # torch made importable beside torchvision

SECTIONS = ("card", "disk", "blip", "blip_stage", "clip", "clip_stage", "embed", "embed_stage", "embed_13b")


class Run:
    """The budget and the output: one flushed JSON line per result."""

    def __init__(self, budget_s: float, out: Path | None, smoke: bool) -> None:
        self.t0, self.budget, self.smoke = time.monotonic(), budget_s, smoke
        self.out = out.open("a") if out else None
        self.dev = device()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def emit(self, section: str, **result: Any) -> None:
        line = json.dumps({"section": section, "t_s": round(time.monotonic() - self.t0, 1), **result})
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()
            os.fsync(self.out.fileno())

    def section(self, name: str, need_s: float, fn: Callable[[], None]) -> None:
        if self.left() < need_s:
            self.emit(name, skipped=f"{self.left():.0f} s left, needs about {need_s:.0f} s")
            return
        try:
            fn()
        except Exception as exc:  # a section that fails is a result; the next one still runs
            self.emit(name, error=f"{type(exc).__name__}: {exc}"[:500], where=traceback.format_exc()[-800:])
        finally:
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    def ab(self, name: str, a: Callable[[], Any], b: Callable[[], Any], items: int, **extra: Any) -> dict:
        """A (today's path) and B (the change) in turn, A/B/A/B after one warm-up of each: both
        medians, items per second, and B's speed-up (A's time over B's)."""
        a(), b()
        times: dict[str, list[float]] = {"a": [], "b": []}
        for _ in range(2):
            for key, fn in (("a", a), ("b", b)):
                sync()
                t = time.perf_counter()
                fn()
                sync()
                times[key].append(time.perf_counter() - t)
        ma, mb = statistics.median(times["a"]), statistics.median(times["b"])
        result = {
            "a_median_s": round(ma, 4),
            "b_median_s": round(mb, 4),
            "a_items_per_s": round(items / ma, 1),
            "b_items_per_s": round(items / mb, 1),
            "speedup": round(ma / mb, 3),
            "items": items,
            **extra,
        }
        self.emit(name, **result)
        return result


def clocks() -> dict[str, Any]:
    """The card's clocks, temperature and power now (nvidia-smi), or nothing without one."""
    fields = "clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,power.limit"
    try:
        got = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if got.returncode != 0 or not got.stdout.strip():
        return {}
    return dict(
        zip(fields.split(","), (v.strip() for v in got.stdout.splitlines()[0].split(",")), strict=False)
    )


def card_section(run: Run, when: str) -> None:
    run.emit(
        f"card_{when}",
        card=card(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cpus=os.cpu_count(),
        bf16_matmul_tflops=round(matmul_tflops(), 1) if run.dev.type == "cuda" else None,
        **clocks(),
    )


def disk_section(run: Run, where: Path) -> None:
    """Sequential writes with fsync, as the stages' writers make them (parts of tens of MB)."""
    mb, chunk = (16, 4) if run.smoke else (2048, 64)
    block = np.random.default_rng(0).integers(0, 255, chunk * 2**20, dtype=np.uint8).tobytes()
    path = where / "disk-check.bin"
    t = time.perf_counter()
    with path.open("wb") as fh:
        for _ in range(mb // chunk):
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
    seconds = time.perf_counter() - t
    path.unlink()
    run.emit("disk", mb=mb, write_mb_per_s=round(mb / seconds, 1), path=str(where))


# ---- data roots for the stages ---------------------------------------------------------------------
def images(n: int) -> list[bytes]:
    from images import image_set

    return image_set(n, unique=min(n, 256))


def prompts(n: int) -> list[tuple[str, str]]:
    from bench_caption_clip import prompt_pair

    return [prompt_pair(i) for i in range(n)]


def data_root(where: Path, n: int, upto: str) -> Any:
    """A data root whose tables up to (not including) stage `upto` hold n ok rows each."""
    from storage.schemas import OK
    from surd import chain

    data = chain.PIPELINE.data_dir(where).open()
    blobs, pairs = images(n), prompts(n)
    ids = [f"{i:016x}" for i in range(n)]
    content = {
        "raw_items": lambda i: {
            "source": "civitai",
            "source_item_id": str(i),
            "complex_prompt": pairs[i][1],
            "image_url": f"https://example.org/{i}.jpeg",
        },
        "images": lambda i: {"image": blobs[i]},
        "captions": lambda i: {"simple_prompt": pairs[i][0], "model_id": "bench"},
    }
    for table in chain.PIPELINE.upstream(upto):
        names = data.table(table).schema.names
        fill = content.get(table, lambda i: {})
        for k in range(0, n, 2048):
            rows = [
                {**dict.fromkeys(names), "sample_id": ids[i], "status": OK, **fill(i)}
                for i in range(k, min(n, k + 2048))
            ]
            data.table(table).write(rows)
    return data


@contextmanager
def models_of_the_real_architectures(smoke: bool) -> Iterator[None]:
    """surd.models.profiles returning random weights of the real architectures (or the tiny
    ones), so the stages run as they do in production without a download."""
    from bench_caption_clip import blip, clip
    from bench_embed import build

    from surd.models import profiles, tiny

    size = "tiny" if smoke else "base"
    saved = profiles.captioner, profiles.clip, profiles.llm
    cpu = torch.device("cpu")

    def captioner(settings: Any) -> Any:
        model, proc = blip(size, cpu)
        return profiles.Loaded(model.float(), proc, f"random {size} BLIP")

    def clip_(settings: Any) -> Any:
        model, tok = clip(size, cpu)
        return profiles.Loaded(model.float(), None, f"random {size} CLIP", tok)

    def llm(settings: Any, name: str | None = None) -> Any:
        preset = "tiny" if smoke else (name or "llama-7b")
        dev = device()
        return profiles.Loaded(build(preset, dev), BosTokenizer(tiny.llama_tokenizer()), f"random {preset}")

    profiles.captioner, profiles.clip, profiles.llm = captioner, clip_, llm
    try:
        yield
    finally:
        profiles.captioner, profiles.clip, profiles.llm = saved


class BosTokenizer:
    """A real BPE tokenizer that starts every prompt with BOS (1), as LLaMA's does."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1, *ids] for ids in self.tok(texts)["input_ids"]]}


def stage_run(run: Run, name: str, make: Callable[[], Any], n: int, **extra: Any) -> Any:
    """A stage over its Parquet input, writing its table: items per second, writer included
    (the model's load is not counted: it happens in `start`, timed apart)."""
    from surd.stages.base import run_stage

    stage = make()
    sync()
    t = time.perf_counter()
    done = run_stage(stage)
    sync()
    seconds = time.perf_counter() - t
    run.emit(
        name,
        items=n,
        processed=done.processed,
        seconds_with_model_load=round(seconds, 2),
        items_per_s_with_model_load=round(n / seconds, 1),
        **extra,
    )
    return stage


def settings_for(root: Path, smoke: bool, **sections: Any) -> Any:
    from surd.config import load_settings

    workers = 0 if smoke else max(1, (os.cpu_count() or 2) - 1)
    given: dict[str, Any] = {
        "data_root": root,
        "profile": "real",
        "part_size": 256 if smoke else 2048,
        "caption": {"workers": workers, "batch_size": 8 if smoke else 256},
        "clip": {"workers": workers, "batch_size": 16 if smoke else 1024},
    }
    return load_settings(**{**given, **sections})


# ---- BLIP ------------------------------------------------------------------------------------------
def blip_section(run: Run) -> None:
    from bench_caption_clip import blip

    from surd.models.blip_decode import BlipDecoder
    from surd.models.blip_vision import use_sdpa

    model, proc = blip("tiny" if run.smoke else "base", run.dev)
    n = 8 if run.smoke else 256
    size = model.config.vision_config.image_size
    dtype = next(model.parameters()).dtype
    px = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(run.dev, dtype)
    prompt = proc.tokenizer(["a picture of"], return_tensors="pt").input_ids[0]
    for search in ("lavis", "transformers"):
        before = BlipDecoder(model, 3, 30, 10, search=search)
        before.contiguous_cross = before.prefix_reorder = False
        after = BlipDecoder(model, 3, 30, 10, search=search)
        same = torch.equal(before.generate(px, prompt), after.generate(px, prompt))
        run.ab(
            f"blip_model_{search}",
            lambda b=before: b.generate(px, prompt),
            lambda a=after: a.generate(px, prompt),
            n,
            change="cross K/V contiguous once + live-prefix cache reorder",
            beams=3,
            identical=same,
        )
    after = BlipDecoder(model, 3, 30, 10, search="lavis")  # the default search, before and after SDPA
    eager = after.generate(px, prompt)
    base_vision = lambda: model.vision_model(pixel_values=px)  # noqa: E731
    with torch.inference_mode():
        t_eager = _median(base_vision)
        use_sdpa(model)
        t_sdpa = _median(base_vision)
    fused = after.generate(px, prompt)
    rows_same = float((fused == eager).all(dim=1).float().mean()) if fused.shape == eager.shape else None
    run.emit(
        "blip_sdpa_vision",
        eager_vision_s=round(t_eager, 4),
        sdpa_vision_s=round(t_sdpa, 4),
        speedup=round(t_eager / t_sdpa, 3),
        captions_same_share=rows_same,
        note="not exact: off by default (caption.vision_attention)",
    )


def _median(fn: Callable[[], Any], k: int = 3) -> float:
    fn()
    out = []
    for _ in range(k):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def model_stage_section(run: Run, tmp: Path, table: str, section: str, n: int, batch: int) -> None:
    """A model stage (captions or clip_scores) over n stored images, decoding them in workers as
    today and, on a GPU, on the GPU (the `gpu_decode` option) as a second run."""
    from surd import chain

    root = tmp / table
    data = data_root(root, n, table)
    key = "caption" if table == "captions" else "clip"
    workers = 0 if run.smoke else max(1, (os.cpu_count() or 2) - 1)
    for gpu_decode in (False, True) if run.dev.type == "cuda" else (False,):
        shutil.rmtree(root / "tables" / table, ignore_errors=True)
        cfg = {"workers": workers, "batch_size": batch, "gpu_decode": gpu_decode}
        settings = settings_for(root, run.smoke, **{key: cfg})
        stage_run(
            run,
            section + ("_gpu_decode" if gpu_decode else ""),
            lambda s=settings: chain.PIPELINE.build(table, s, data),
            n,
        )


# ---- CLIP ------------------------------------------------------------------------------------------
def clip_section(run: Run) -> None:
    import pyarrow as pa
    from bench_caption_clip import clip

    from storage.tables import to_arrow
    from surd.models.clip_score import ClipScorer
    from surd.models.preprocess import Preprocessor, is_truncated, to_tensor, tokenize
    from surd.stages.clip import CLIP_SCORES

    model, tok = clip("tiny" if run.smoke else "base", run.dev)
    n = 64 if run.smoke else 4096
    texts = [t for pair in prompts(n) for t in pair]
    run.ab(
        "clip_tokenize",
        lambda: (tok(texts), [is_truncated(tok, t) for t in texts]),
        lambda: tokenize(tok, texts),
        len(texts),
        change="each prompt encoded once",
        identical=bool(torch.equal(tok(texts), tokenize(tok, texts)[0])),
    )
    scorer = ClipScorer(model, tok)
    blobs = images(n)
    with Preprocessor(scorer.spec, 0) as pre:
        (_, dec), *_ = list(pre.batches(((i, b, ()) for i, b in enumerate(blobs)), n))
    tokens = tokenize(tok, texts)[0].view(n, 2, -1)
    rows = scorer.score_tokens(dec.pixels, tokens)
    model_s = _median(lambda: scorer.score_tokens(dec.pixels, tokens))
    run.emit("clip_model", items=n, model_only_items_per_s=round(n / model_s, 1))
    table_rows = [{"sample_id": f"{i:016x}", "status": "ok", **r} for i, r in enumerate(rows)]
    run.ab(
        "clip_writer_columns",
        lambda: pa.Table.from_pylist(table_rows, CLIP_SCORES),
        lambda: to_arrow(table_rows, CLIP_SCORES),
        n,
        change="rows to Arrow a column at a time",
        identical=to_arrow(table_rows, CLIP_SCORES).equals(pa.Table.from_pylist(table_rows, CLIP_SCORES)),
    )
    if run.dev.type != "cuda":
        run.emit("clip_gpu_decode", skipped="no GPU")
        return
    from surd.models.preprocess import device_pixels

    on_gpu = device_pixels(blobs, scorer.spec, run.dev)
    pillow = torch.stack([to_tensor(b, scorer.spec) for b in blobs]).to(run.dev)
    delta = (on_gpu.int() - pillow.int()).abs().float()
    keep_a = [r["p_simple"] >= r["p_complex"] for r in rows]
    keep_b = [r["p_simple"] >= r["p_complex"] for r in scorer.score_tokens(on_gpu, tokens)]
    flips = sum(a != b for a, b in zip(keep_a, keep_b, strict=True))
    run.ab(
        "clip_gpu_decode",
        lambda: torch.stack([to_tensor(b, scorer.spec) for b in blobs]).to(run.dev),
        lambda: device_pixels(blobs, scorer.spec, run.dev),
        n,
        change="decode on the GPU (one process; the stage decodes in workers)",
        mean_abs_pixel_delta=round(float(delta.mean()), 3),
        max_abs_pixel_delta=float(delta.max()),
        keep_flip_share=round(flips / n, 5),
    )


# ---- embeddings ------------------------------------------------------------------------------------
def token_ids(n: int, bos: bool = True) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(6, 25, (n,), generator=gen).tolist()
    return [([1] if bos else []) + torch.randint(3, 32000, (k - 1,), generator=gen).tolist() for k in lengths]


def embed_section(run: Run, preset: str) -> None:
    from bench_embed import build

    from surd.models.llm_pool import LayerPooler

    model = build("tiny" if run.smoke else preset, run.dev)
    n = 64 if run.smoke else 8192
    seqs = token_ids(n)
    cuda = run.dev.type == "cuda"
    if cuda:  # the production default: each block compiled (in place: every pooler below uses it)
        LayerPooler(model, compile_blocks=True).close()

    def pool(**change: bool) -> np.ndarray:
        p = LayerPooler(model, **change)  # one pooler at a time: its hooks are the model's only ones
        out = np.zeros((n, len(p.layers), p.base.config.hidden_size), np.float16)
        for b in p.run(seqs, 65536 if cuda else 256):
            out[b.indices] = b.numpy()
        p.close()
        return out

    today = {"shared_first": False, "overlap_copy": False}
    new = {"shared_first": True, "overlap_copy": True}
    a, b = pool(**today).astype(np.float32), pool(**new).astype(np.float32)
    run.ab(
        f"embed_model_{preset}",
        lambda: pool(**today),
        lambda: pool(**new),
        n,
        change="first (BOS) token computed once + host copies on a side stream",
        compiled=cuda,
        max_rel_delta=round(float((np.abs(b - a) / (np.abs(a) + 1e-3)).max()), 5),
        within_bf16=bool((np.abs(b - a) <= 2**-8 * np.abs(a) + 1e-3).all()),
    )


def embed_stage_section(run: Run, tmp: Path) -> None:
    from storage.embeddings import EmbeddingStore, prompt_sha1
    from surd import chain
    from surd.stages.embed import EmbedStage

    n = 64 if run.smoke else 20000
    texts = [s for s, _ in prompts(n)]
    texts = [t if i % 10 else texts[i // 10] for i, t in enumerate(texts)]  # a tenth repeat a prompt
    todo = [(f"{i:016x}", t, prompt_sha1(t)) for i, t in enumerate(texts)]
    for part_bytes, dedupe in ((1, False), (512 * 2**20, True)):
        root = tmp / f"embed-{part_bytes}"
        shutil.rmtree(root, ignore_errors=True)
        embed = {"llm": "llama-7b", "part_bytes": max(2**20, part_bytes), "dedupe": dedupe}
        settings = settings_for(root, run.smoke, part_size=256, embed=embed)
        data = chain.PIPELINE.data_dir(root).open()
        stage = stage_run(
            run,
            "embed_stage" + ("_parts_by_bytes_dedupe" if dedupe else "_256_prompt_parts"),
            lambda s=settings, d=data: EmbedStage(s, d, None, "llama-7b", todo),
            n,
            change="before: 256-prompt parts, every prompt embedded"
            if not dedupe
            else "parts by bytes, dedupe",
        )
        run.emit(f"embed_stage_parts_{int(dedupe)}", parts=len(EmbeddingStore(data, stage.model_id).parts()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=460, help="stop starting sections after this")
    ap.add_argument("--smoke", action="store_true", help="tiny models and sizes (the CPU check in the suite)")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="these sections only")
    ap.add_argument("--scratch", type=Path, help="where the stages' data roots go (default: a temp dir)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Run(args.budget_s, args.out, args.smoke)
    want = set(args.only or SECTIONS)
    need = (lambda s: s / 100) if args.smoke else (lambda s: s)  # smoke: the same plan, 100× smaller
    sizes = (
        {"blip": (16, 8), "clip": (32, 16)} if args.smoke else {"blip": (8192, 256), "clip": (32768, 1024)}
    )
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.scratch)))
        stack.enter_context(models_of_the_real_architectures(args.smoke))
        plan: list[tuple[str, float, Callable[[], None]]] = [
            ("card", 20, lambda: card_section(run, "before")),
            ("disk", 30, lambda: disk_section(run, tmp)),
            ("blip", 60, lambda: blip_section(run)),
            ("clip", 40, lambda: clip_section(run)),
            ("embed", 120, lambda: embed_section(run, "llama-7b")),
            (
                "blip_stage",
                60,
                lambda: model_stage_section(run, tmp, "captions", "blip_stage", *sizes["blip"]),
            ),
            (
                "clip_stage",
                50,
                lambda: model_stage_section(run, tmp, "clip_scores", "clip_stage", *sizes["clip"]),
            ),
            ("embed_stage", 60, lambda: embed_stage_section(run, tmp)),
            ("embed_13b", 90, lambda: embed_section(run, "llama-13b")),
        ]
        for name, seconds, fn in plan:
            if name in want:
                run.section(name, need(seconds), fn)
        if "card" in want:
            run.section("card", 0, lambda: card_section(run, "after"))
    run.emit("done", budget_left_s=round(run.left(), 1))


if __name__ == "__main__":
    main()
