"""The images stage against img2dataset on the same URL list, served by a local HTTP server.

Images: JPEG, PNG and WebP, 256–2048 px, with some 404s and truncated files mixed in; both tools
resize to 512 (centre crop), write Parquet with the image bytes, and use the same process and
thread counts. Our stage runs with its per-host politeness on (its limits set above what the
local server needs, as they would be for a CDN). Prints images/s for each, their ratio and the
peak memory of each tool's process tree.

    make bench-images            # installs img2dataset into its own venv, then runs this
    python benchmarks/bench_images.py --images 5000 --processes 2 --threads 32 \
        --img2dataset .venv-img2dataset/bin/img2dataset
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_image(i: int) -> tuple[str, bytes]:
    rng = np.random.default_rng(i)
    side = int(rng.integers(256, 2049))
    other = int(side * rng.choice([1.0, 0.75, 1.33, 0.56]))
    img = Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).resize(
        (side, max(64, other)), Image.Resampling.BICUBIC
    )
    fmt = rng.choice(["JPEG"] * 8 + ["PNG", "WEBP"])
    if fmt != "JPEG":
        img = img.resize((min(img.width, 1024), min(img.height, 1024)))
    buf = io.BytesIO()
    img.save(buf, format=str(fmt), quality=90)
    data = buf.getvalue()
    if i % 97 == 0:
        data = data[: len(data) // 3]  # truncated
    return f"{i:06d}.{str(fmt).lower()}", data


def build_images(n: int, folder: Path, processes: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name[:6] for p in folder.iterdir() if p.name[0].isdigit()}
    todo = [i for i in range(n) if f"{i:06d}" not in have]
    if todo:
        with ProcessPoolExecutor(processes) as pool:
            for name, data in pool.map(make_image, todo, chunksize=32):
                (folder / name).write_bytes(data)
    names = sorted(p.name for p in folder.iterdir() if p.name[0].isdigit() and int(p.name[:6]) < n)
    return [("missing-" + nm if i % 101 == 0 else nm) for i, nm in enumerate(names)]  # some 404s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss(proc: subprocess.Popen[bytes], box: dict[str, int]) -> None:
    try:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = 0
            for q in [p, *p.children(recursive=True)]:
                try:
                    total += q.memory_info().rss
                except psutil.Error:
                    continue
            box["peak"] = max(box.get("peak", 0), total)
            time.sleep(0.1)
    except psutil.Error:
        return


def timed_run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    box: dict[str, int] = {}
    watcher = threading.Thread(target=peak_rss, args=(proc, box), daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{out.decode()[-3000:]}")
    return seconds, box.get("peak", 0), out.decode()


def ours(urls: list[str], work: Path, processes: int, threads: int) -> dict:
    from surd import chain
    from surd.ids import sample_id

    root = work / "surd"
    data = chain.PIPELINE.data_dir(root).open()
    now = datetime.now(UTC)
    rows = [
        {
            "sample_id": sample_id("bench", str(i)),
            "status": "ok",
            "reason": None,
            "source": "bench",
            "source_item_id": str(i),
            "image_url": u,
            "complex_prompt": "p",
            "fetched_at": now,
        }
        for i, u in enumerate(urls)
    ]
    for k in range(0, len(rows), 5000):
        data.table("raw_items").write(rows[k : k + 5000])
    env = {
        **os.environ,
        "SURD_DATA_ROOT": str(root),
        "SURD_PART_SIZE": "512",
        "SURD_IMAGES__WORKERS": str(processes),
        "SURD_IMAGES__MAX_CONCURRENCY": str(threads * processes),  # per process, as img2dataset's
        "SURD_IMAGES__REQUESTS_PER_SECOND": "100000",
        "SURD_IMAGES__QUALITY": "95",
        "SURD_CRAWL__MAX_RETRIES": "0",
    }
    seconds, peak, _ = timed_run([sys.executable, "-m", "surd", "images"], env)
    table = data.table("images").read(["status"]).column(0).to_pylist()
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "ok": table.count("ok"), "rows": len(table)}


def img2dataset(urls: list[str], work: Path, exe: str, processes: int, threads: int) -> dict:
    url_file = work / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    out = work / "i2d"
    cmd = [
        exe,
        "--url_list",
        str(url_file),
        "--input_format",
        "txt",
        "--output_format",
        "parquet",
        "--output_folder",
        str(out),
        "--image_size",
        "512",
        "--resize_mode",
        "center_crop",
        "--processes_count",
        str(processes),
        "--thread_count",
        str(threads),
        "--encode_quality",
        "95",
        "--number_sample_per_shard",
        "512",
        "--retries",
        "0",
        "--timeout",
        "20",
        "--disallowed_header_directives",
        "[]",
    ]
    seconds, peak, _ = timed_run(cmd)
    ok = 0
    for stats in out.glob("*_stats.json"):
        ok += json.loads(stats.read_text()).get("successes", 0)
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "ok": ok}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument(
        "--img2dataset", default=None, help="path of img2dataset's executable; omitted: ours only"
    )
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "images")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    names = build_images(args.images, args.cache, args.processes)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=args.cache,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        urls = [f"http://127.0.0.1:{port}/{n}" for n in names]
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            result: dict = {
                "bench": "images",
                "images": len(urls),
                "processes": args.processes,
                "threads": args.threads,
                "cpus": os.cpu_count(),
            }
            mine = ours(urls, work, args.processes, args.threads)
            result["surd_images_per_s"] = round(len(urls) / mine["seconds"], 1)
            result["surd_peak_rss_mb"] = round(mine["peak_rss_mb"])
            result["surd_ok"] = mine["ok"]
            if args.img2dataset:
                theirs = img2dataset(urls, work, args.img2dataset, args.processes, args.threads)
                result["img2dataset_images_per_s"] = round(len(urls) / theirs["seconds"], 1)
                result["img2dataset_peak_rss_mb"] = round(theirs["peak_rss_mb"])
                result["img2dataset_ok"] = theirs["ok"]
                result["ratio"] = round(result["surd_images_per_s"] / result["img2dataset_images_per_s"], 2)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        server.terminate()
    print(json.dumps(result), flush=True)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
