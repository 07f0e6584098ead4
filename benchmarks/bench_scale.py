"""The whole data path at N items: a generated Civitai on loopback, each stage a `surd` command.

    python benchmarks/bench_scale.py --items 10000
    python benchmarks/bench_scale.py --items 100000 --out benchmarks/results/scale.jsonl

The site serves N image objects in Civitai's `/api/v1/images` shape (200 a page, cursor paging)
with generated pictures (benchmarks/synthetic.py: families of four alike pictures that share a
prompt, and about 2% planted copies: exact, re-encoded, resized, cropped). The stages run in order
with the tiny models on CPU, politeness limits raised for loopback: crawl → images → caption →
clip-filter → near-duplicates (the declared stages, surd.chain) → review enqueue (policy
demo-margin-v1) → release create → embed. Then each runs
again with nothing to do. One JSON line per stage:

    {"stage", "items", "seconds", "cpu_seconds", "cpu_ms_per_item", "peak_rss_mb",
     "main_rss_mb", "noop_seconds", "false_duplicates", "missed_duplicates"}

`items` is what came into the stage; `cpu_seconds` the stage's processes together (its worker
processes included); `peak_rss_mb` the largest sum over its process tree, `main_rss_mb` the stage
process's own; `noop_seconds` the rerun's wall time (`startup_seconds` on the first line is what a
command costs that does nothing: `surd --version`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import synthetic  # noqa: E402

from surd import chain  # noqa: E402
from surd.ids import sample_id  # noqa: E402
from surd.sources.replay import ReplaySite  # noqa: E402

FIRST_ID = 10_000_000
SURD = str(Path(sys.executable).parent / "surd")
WORDS = {
    "subject": ["a fox", "an old lighthouse", "a cyberpunk street", "a dragon", "a teacup", "two robots"],
    "place": ["in the rain", "at dawn", "on the moon", "under the sea", "in a forest", "in a library"],
    "style": ["oil painting", "studio photo", "watercolor", "isometric render", "ukiyo-e", "pixel art"],
    "extra": ["highly detailed", "8k", "trending on artstation", "soft light", "bokeh", "masterpiece"],
}


def prompt(family: int) -> str:
    """One prompt per family of pictures, as one prompt's generations with different seeds."""
    parts = []
    for key, words in WORDS.items():
        parts.append(words[(family * 7 + len(key) * (family // 5 + 1)) % len(words)])
    return f"{parts[0]} {parts[1]}, {parts[2]}, {parts[3]}, variation {family}"


class GeneratedCivitai(ReplaySite):
    """`/civitai/api/v1/images` over N generated items; `/img/gen/<k>/...` their pictures."""

    def __init__(self, n: int) -> None:
        super().__init__(fault_every=0)
        self.n = n
        self.items = synthetic.items(n)

    def _obj(self, k: int) -> dict[str, Any]:
        pic, _, _ = self.items[k]
        uuid = f"{k:08x}-0000-4000-8000-{k:012x}"
        return {
            "id": FIRST_ID + k,
            "url": f"{self.base_url}/img/gen/{k}/width=768/{uuid}.jpeg",
            "width": 768,
            "height": 768,
            "nsfwLevel": "None",
            "createdAt": "2026-11-30T00:00:00.000Z",
            "postId": k,
            "username": f"user{pic % 97}",
            "baseModel": "SD 1.5",
            "meta": {
                "prompt": prompt(pic // synthetic.FAMILY),
                "seed": pic,
                "steps": 30,
                "sampler": "DPM++ 2M",
                "cfgScale": 7,
                "Size": "768x768",
            },
        }

    def civitai_page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit", ["100"])[0])
        cursor = query.get("cursor", [None])[0]
        start = int(cursor.split("|")[0]) if cursor else 0
        objs = [self._obj(k) for k in range(start, min(self.n, start + limit))]
        meta = {"nextCursor": f"{start + limit}|0"} if start + limit < self.n else {}
        return 200, {"items": objs, "metadata": meta}

    def image(self, path: str) -> tuple[int, str, bytes]:
        m = re.match(r"/img/gen/(\d+)/", path)
        if not m or int(m.group(1)) >= self.n:
            return 404, "text/html", b"not found"
        k = int(m.group(1))
        return 200, "image/jpeg", synthetic.body(self.items[k], k)


class TreeMeter:
    """Peak RSS of a process and its descendants, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.tree = self.main = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                main = self.proc.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except psutil.Error:
                break
            self.main, self.tree = max(self.main, main), max(self.tree, tree)
            time.sleep(0.1)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """Wall seconds, CPU seconds (the command and its children), tree and own peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([SURD, *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meter = TreeMeter(proc.pid)
    _out, err = proc.communicate()
    meter.stop()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"surd {' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, meter.tree / 2**20, meter.main / 2**20


def duplicates(root: Path, site: GeneratedCivitai) -> tuple[int, int]:
    """Distinct pictures dropped as duplicates, and planted copies kept."""
    t = pq.read_table(root / "tables" / "images", columns=["sample_id", "status", "reason"])
    dup = {
        s
        for s, r in zip(t.column("sample_id").to_pylist(), t.column("reason").to_pylist(), strict=True)
        if r and r.startswith("duplicate_of:")
    }
    ids = [sample_id("civitai", str(FIRST_ID + k)) for k in range(site.n)]
    false = sum(1 for k, it in enumerate(site.items) if it[1] is None and ids[k] in dup)
    missed = sum(1 for k, it in enumerate(site.items) if it[1] is not None and ids[k] not in dup)
    return false, missed


def _ok(root: Path, table: str) -> int:
    t = pq.read_table(root / "tables" / table, columns=["status"])
    return int(pc.sum(pc.equal(t.column("status"), "ok")).as_py() or 0)


def came_in(root: Path, stage: str, n: int) -> int:
    """Items a stage takes in: those the stage before it kept (release and embed: the release's
    rows, read once the release exists)."""
    if stage == "crawl":
        return n
    if stage in ("release", "embed"):
        latest = sorted(p for p in (root / "releases").iterdir() if p.name.startswith("v"))[-1]
        return int(json.loads((latest / "manifest.json").read_text())["rows"])
    tables = chain.PIPELINE.tables
    if stage == "review":
        return _ok(root, tables[-1])
    return _ok(root, tables[tables.index(stage) - 1])


STAGES = [  # (what the row is called: a table, or a step; the command)
    ("crawl", ["crawl", "civitai"]),
    *((s.name, [chain.PIPELINE.command(s)]) for s in chain.PIPELINE),
    ("review", ["review", "enqueue"]),
    ("release", ["release", "create"]),
    ("embed", ["embed"]),
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--data-root", type=Path, help="default: a temporary folder, removed after")
    p.add_argument("--out", type=Path, help="append the JSON lines to this file too")
    p.add_argument("--upto", help="stop after this stage (a smoke test of the script); default: all")
    a = p.parse_args(argv)
    names = [n for n, _ in STAGES]
    if a.upto is not None and a.upto not in names:
        p.error(f"--upto: one of {', '.join(names)}")
    stages = STAGES[: names.index(a.upto) + 1] if a.upto else STAGES
    root = a.data_root or Path(tempfile.mkdtemp(prefix="surd-scale-"))
    site = GeneratedCivitai(a.items).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURD_")} | {
        "SURD_DATA_ROOT": str(root),
        "SURD_PROFILE": "tiny",
        "SURD_DEVICE": "cpu",
        "SURD_SOURCES__CIVITAI__BASE_URL": site.source_urls()["civitai"],
        "SURD_CRAWL__REQUESTS_PER_SECOND": "1000",
        "SURD_IMAGES__REQUESTS_PER_SECOND": "5000",
        "SURD_IMAGES__MAX_CONCURRENCY": "64",
        "SURD_REVIEW__AUTO_POLICY": "demo-margin-v1",
        "SURD_PROGRESS_EVERY": "60",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    results = []
    try:
        startup = run(["--version"], env)[0]
        for name, cmd in stages:
            seconds, cpu, tree, main_rss = run(cmd, env)
            items = came_in(root, name, a.items)
            r: dict[str, Any] = {
                "stage": name,
                "items": items,
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "cpu_ms_per_item": round(cpu / max(1, items) * 1000, 3),
                "peak_rss_mb": round(tree, 1),
                "main_rss_mb": round(main_rss, 1),
                "false_duplicates": None,
                "missed_duplicates": None,
            }
            if name == "images":
                r["false_duplicates"], r["missed_duplicates"] = duplicates(root, site)
            results.append(r)
        for r, (_, cmd) in zip(results, stages, strict=True):
            r["noop_seconds"] = round(run(cmd, env)[0], 2)
        results[0]["startup_seconds"] = round(startup, 2)
    finally:
        site.stop()
        if a.data_root is None:
            shutil.rmtree(root, ignore_errors=True)
    for r in results:
        line = json.dumps(r)
        print(line, flush=True)
        if a.out:
            with a.out.open("a") as f:
                f.write(line + "\n")
    return results


if __name__ == "__main__":
    main()
