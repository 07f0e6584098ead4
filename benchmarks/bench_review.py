"""The review server under load: N simulated stewards claiming and deciding over HTTP at once.

Starts `surd review serve` as its own process tree (uvicorn, `--workers`), on SQLite and on a
PostgreSQL server it starts itself (initdb in a temp dir; needs the Debian `postgresql` package).
Each steward claims `--claim` items, then decides them one by one, until the queue is empty.
Prints decisions/s and the p50/p95 latency of claim and decide, and appends a JSON line per backend.

    python benchmarks/bench_review.py --stewards 50 --items 5000 --workers 2 \\
        --out benchmarks/results/review-$(hostname).jsonl
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


def _pct(xs: list[float], q: float) -> float:
    return round(1000 * statistics.quantiles(xs, n=100)[q - 1], 2) if len(xs) >= 2 else float("nan")


def run_backend(name: str, url: str, args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    tokens = _seed(url, args.items, args.stewards)
    port = _free_port()
    env = {**os.environ, "SURD_DATA_ROOT": str(data_root), "SURD_REVIEW__DATABASE_URL": url}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "surd",
            "review",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(
            base + "/login",
            server,
            120,
            "review server",
            lambda: server.stderr.read() if server.stderr else "",
        )
        claim_s: list[float] = []
        decide_s: list[float] = []
        errors: list[str] = []
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


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stewards", type=int, default=50)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--claim", type=int, default=5, help="items per claim")
    ap.add_argument("--workers", type=int, default=2, help="server processes")
    ap.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="surd-bench-review-") as tmp:
        for backend in args.backends:
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
