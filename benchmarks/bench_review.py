"""The review under load, three ways (`--mode`):

`api` (the default): N simulated stewards claiming and deciding over HTTP at once. Starts
`surd review serve` as its own process tree (uvicorn, `--workers`), on SQLite and on a PostgreSQL
server it starts itself (initdb in a temp dir; needs the Debian `postgresql` package). Each steward
claims `--claim` items, then decides them one by one, until the queue is empty. Prints decisions/s,
the p50/p95 latency of claim and decide, and whether any acknowledged decision is missing from the
log (`lost`).

`browser`: one steward in Debian's Chromium (Playwright) working `--items` queued items with stored
images, in the grid view (all accepts, a page a keystroke) and then, on a fresh queue, in the single
view (a key an item): keystrokes, requests and server time (the `Server-Timing` header) per
decision, and the server time per grid page (the page's POST and the next page) at p50/p95.

`detector`: the trained NSFW detector (surd.models.nsfw_detector) on synthetic 512 px JPEGs, at two
sizes and two batch sizes: images per second on this machine's cores.

Each result is a JSON line, printed and appended to `--out`:

    python benchmarks/bench_review.py --stewards 30 --items 16000 --workers 2 \\
        --out benchmarks/results/review-$(hostname).jsonl
    python benchmarks/bench_review.py --mode browser --items 500 --backends sqlite
    python benchmarks/bench_review.py --mode detector --images 64 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from surd import chain  # noqa: E402
from surd.review import queries  # noqa: E402
from tests.serve import wait_until_up  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(url: str, items: int, stewards: int) -> list[str]:
    from surd.review import auth, queue

    engine = queue.connect(url)
    rows = [
        {
            "sample_id": f"b{i:07d}",
            "simple_prompt": f"a picture of item {i}",
            "p_simple": 0.6,
            "p_complex": 0.4,
        }
        for i in range(items)
    ]
    for start in range(0, items, 5000):
        queue.enqueue(engine, rows[start : start + 5000], audit_share=0.1)
    tokens = []
    for k in range(stewards):
        auth.add_steward(engine, f"bench{k:03d}", "bench-password")
        tokens.append(auth.new_token(engine, f"bench{k:03d}"))
    engine.dispose()
    return tokens


def _pct(xs: list[float], q: int) -> float:
    return round(1000 * statistics.quantiles(xs, n=100)[q - 1], 2) if len(xs) >= 2 else float("nan")


def run_backend(name: str, url: str, args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    tokens = _seed(url, args.items, args.stewards)
    server, base = _server(url, data_root, args.workers)
    try:
        claim_s: list[float] = []
        decide_s: list[float] = []
        errors: list[str] = []
        acknowledged: list[int] = []  # decision ids the server answered 200 with
        lock = threading.Lock()

        def steward(token: str) -> None:
            local_c: list[float] = []
            local_d: list[float] = []
            limits = httpx.Limits(max_connections=1)
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits
            ) as c:
                while True:
                    t0 = time.perf_counter()
                    r = c.post("/api/claim", json={"n": args.claim})
                    local_c.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors.append(f"claim {r.status_code}")
                        break
                    got = r.json()["items"]
                    if not got:
                        # an audit item may still wait for a second steward: stop when none is open
                        if c.get("/api/progress").json()["remaining"] == 0:
                            break
                        time.sleep(0.05)
                        continue
                    for item in got:
                        t0 = time.perf_counter()
                        r = c.post("/api/decide", json={"sample_id": item["sample_id"], "decision": "accept"})
                        local_d.append(time.perf_counter() - t0)
                        if r.status_code != 200:
                            errors.append(f"decide {r.status_code}")
                        else:
                            acknowledged.append(r.json()["decision_id"])
            with lock:
                claim_s.extend(local_c)
                decide_s.extend(local_d)

        threads = [threading.Thread(target=steward, args=(t,)) for t in tokens]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    from surd.review import queue

    engine = queue.connect(url)
    prog = queries.progress(engine)
    logged = {int(r["id"]) for r in queries.export_rows(engine, "audit")}
    engine.dispose()
    return {
        "bench": "review",
        "backend": name,
        "stewards": args.stewards,
        "items": args.items,
        "workers": args.workers,
        "claim_batch": args.claim,
        "decisions": len(decide_s),
        "errors": len(errors),
        "final_items": prog["final"],
        "acknowledged": len(acknowledged),
        "log_rows": len(logged),
        "lost": len(set(acknowledged) - logged),  # acknowledged but not in the log: must be 0
        "decisions_per_s": round(len(decide_s) / wall, 1),
        "claim_p50_ms": _pct(claim_s, 50),
        "claim_p95_ms": _pct(claim_s, 95),
        "decide_p50_ms": _pct(decide_s, 50),
        "decide_p95_ms": _pct(decide_s, 95),
        "wall_s": round(wall, 2),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).date().isoformat(),
    }


def _server(url: str, data_root: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    env = {
        **os.environ,
        "SURD_DATA_ROOT": str(data_root),
        "SURD_REVIEW__DATABASE_URL": url,
        "SURD_REVIEW__SECURE_COOKIES": "false",
    }
    cmd = [sys.executable, "-m", "surd", "review", "serve", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(
        base + "/login", server, 120, "review server", lambda: server.stderr.read() if server.stderr else ""
    )
    return server, base


def _seed_with_images(root: Path, items: int) -> str:
    """A data root whose queue holds `items` items (no audit items) with stored 512 px JPEGs."""
    from storage.schemas import OK
    from surd.review import auth, queue

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from images import image_set

    data = chain.PIPELINE.data_dir(root).open()
    url = f"sqlite:///{root / 'review' / 'queue.db'}"
    engine = queue.connect(url)
    auth.add_steward(engine, "bench", "bench-password")
    blobs = image_set(items, unique=64)
    queue.enqueue(
        engine,
        [
            {
                "sample_id": f"b{i:07d}",
                "simple_prompt": f"a picture of item {i}",
                "complex_prompt": f"item {i}, ultra detailed, 8k, artstation",
                "p_simple": 0.6,
                "p_complex": 0.4,
                "source": "civitai",
                "nsfw_level": 1,
            }
            for i in range(items)
        ],
    )
    table = data.table("images")
    names = table.schema.names
    table.write(
        [
            {**dict.fromkeys(names), "sample_id": f"b{i:07d}", "status": OK, "image": blobs[i]}
            for i in range(items)
        ]
    )
    engine.dispose()
    return url


def _browser_view(view: str, items: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One steward works the whole queue in `view` (grid or single), keyboard only."""
    from playwright.sync_api import sync_playwright

    root = tmp / view
    url = _seed_with_images(root, items)
    server, base = _server(url, root, 1)
    requests = 0
    timing: list[tuple[bool, float]] = []  # (a page?, its Server-Timing in ms) of every response

    fetched: set[str] = set()  # X-Request-Id of every response the server sent

    def seen(response: Any) -> None:
        header, rid = response.headers.get("server-timing", ""), response.headers.get("x-request-id", "")
        if "dur=" in header and rid not in fetched:  # a repeated id is the browser's cache
            fetched.add(rid)
            page = response.request.resource_type == "document"
            timing.append((page, float(header.split("dur=")[1].split(",")[0])))

    def counted(response: Any) -> None:  # a response from the server, not from the cache
        nonlocal requests
        requests += response.headers.get("x-request-id", "") not in fetched

    steps: list[tuple[int, float, float]] = []  # (decisions, pages' server ms, client ms) of each key
    keys = 0
    t0 = time.perf_counter()
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(
                executable_path=args.chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            page = b.new_page()
            page.goto(base + "/login")
            page.fill("#name", "bench")
            page.fill("#password", "bench-password")
            with page.expect_navigation():
                page.keyboard.press("Enter")
            if view == "grid":
                page.goto(base + "/grid")
            page.on("response", counted)
            page.on("response", seen)
            cpu0 = _cpu_s(server.pid)
            left = items
            while left > 0 and page.locator("#empty").count() == 0:
                before = len(timing)
                n = page.locator("#grid .cell").count() if view == "grid" else 1
                k0 = time.perf_counter()
                with page.expect_navigation():
                    page.keyboard.press("Enter" if view == "grid" else "a")
                keys += 1
                page.wait_for_load_state("load")  # the next page, its images included
                turn = 1000 * (time.perf_counter() - k0)
                steps.append((n, sum(ms for is_page, ms in timing[before:] if is_page), turn))
                left -= n
            cpu = _cpu_s(server.pid) - cpu0
            b.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    wall = time.perf_counter() - t0
    from surd.review import queue

    engine = queue.connect(url)
    log = list(queries.export_rows(engine, "audit"))
    engine.dispose()
    decided = sum(n for n, _, _ in steps)
    per_decision = [ms / n for n, ms, _ in steps]
    turns = [ms for _, _, ms in steps]
    out = {
        "bench": "review-browser",
        "view": view,
        "items": items,
        "decisions": decided,
        "log_rows": len(log),
        "views_logged": sorted({r["view"] for r in log}),
        "keystrokes_per_decision": round(keys / decided, 3),
        "requests_per_decision": round(requests / decided, 2),
        "server_ms_per_decision_p50": round(statistics.median(per_decision), 2),  # its pages (POST + GET)
        "server_ms_per_decision_p95": round(_q(per_decision, 95), 2),
        "server_cpu_ms_per_decision": round(1000 * cpu / decided, 2),  # everything: pages, images
        "page_turn_ms_p50": round(statistics.median(turns), 1),  # key to the next page loaded
        "page_turn_ms_p95": round(_q(turns, 95), 1),
        "wall_s": round(wall, 1),
    }
    if view == "grid":  # a page: its decisions' POST and the next page's GET
        pages = [ms for _, ms, _ in steps]
        out |= {
            "page_size": steps[0][0],
            "server_ms_per_page_p50": round(statistics.median(pages), 1),
            "server_ms_per_page_p95": round(_q(pages, 95), 1),
        }
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children so far (the server's workers)."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def _q(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else xs[0]


def run_browser(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    return [_browser_view(view, args.items, args, tmp) for view in ("grid", "single")]


def run_detector(args: argparse.Namespace) -> list[dict[str, Any]]:
    from surd.models.nsfw_detector import Detector

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from images import image_set

    threads = os.cpu_count() or 1
    detector = Detector(threads)
    detector.scores(image_set(2))  # warm-up: onnxruntime's first run allocates
    out = []
    for n in args.images:
        blobs = image_set(n, unique=min(n, 128))
        for batch in args.batch:
            t0 = time.perf_counter()
            for k in range(0, n, batch):
                detector.scores(blobs[k : k + batch])
            s = time.perf_counter() - t0
            out.append(
                {
                    "bench": "nsfw-detector",
                    "model": detector.model_id,
                    "images": n,
                    "batch": batch,
                    "threads": threads,
                    "images_per_s": round(n / s, 1),
                    "ms_per_image": round(1000 * s / n, 1),
                }
            )
    detector.close()
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["api", "browser", "detector"], default="api")
    ap.add_argument("--stewards", type=int, default=50)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--claim", type=int, default=5, help="items per claim")
    ap.add_argument("--workers", type=int, default=2, help="server processes")
    ap.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (--mode browser)")
    ap.add_argument("--images", type=int, nargs="+", default=[64, 256], help="images (--mode detector)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="batch sizes (--mode detector)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = []
    extra = {"host": platform.node(), "cpus": os.cpu_count(), "date": datetime.now(UTC).date().isoformat()}
    with tempfile.TemporaryDirectory(prefix="surd-bench-review-") as tmp:
        if args.mode == "browser":
            results = [r | extra for r in run_browser(args, Path(tmp))]
        elif args.mode == "detector":
            results = [r | extra for r in run_detector(args)]
        for backend in args.backends if args.mode == "api" else ():
            root = Path(tmp) / backend
            if backend == "sqlite":
                results.append(run_backend(backend, f"sqlite:///{root / 'review' / 'queue.db'}", args, root))
            else:
                from tests.pg import PostgresServer

                pg = PostgresServer(_free_port()).start()
                try:
                    results.append(run_backend(backend, pg.new_database(), args, root))
                finally:
                    pg.stop()
    for r in results:
        print(json.dumps(r))
        if args.out:
            with args.out.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
    return results


if __name__ == "__main__":
    main()
