"""The production stack on one machine, as processes: PostgreSQL (the review queue's database and
Prefect's), a Prefect server, the deployments of a rendered `prefect.yaml` registered with
`prefect deploy --all`, a worker of pool `cpu` and one of pool `gpu` (`surd deploy worker`), and the
review server. The only difference from production: the `gpu` worker runs on the CPU, with the tiny
models. Settings reach every process as they do in production: a TOML file named by SURD_CONFIG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import forkserver
from tests.conftest import free_port
from tests.pg import PostgresServer
from tests.prefect_server import PrefectServer
from tests.serve import wait_until_up

ROOT = Path(__file__).resolve().parents[1]
DONE = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def toml(d: dict[str, Any], prefix: str = "") -> str:
    """The few types settings hold (str, int, float, bool, list of str, nested tables)."""
    flat, nested = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            nested.append(toml(v, f"{prefix}{k}."))
        else:
            flat.append(f"{k} = {json.dumps(v)}")
    head = f"[{prefix[:-1]}]\n" if prefix and flat else ""
    return head + "\n".join(flat) + "\n\n" + "".join(nested)


class Stack:
    def __init__(self, home: Path, config: dict[str, Any]) -> None:
        self.home = home
        self.config = config
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg: PostgresServer | None = None
        self.server: PrefectServer | None = None

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> Stack:
        self.pg = PostgresServer(free_port()).start()
        review_db = self.pg.new_database()
        prefect_db = self.pg.new_database().replace("postgresql+psycopg", "postgresql+asyncpg")
        self.server = PrefectServer(self.home / "prefect", free_port(), database_url=prefect_db).start()
        cfg = {**self.config, "review": {**self.config.get("review", {}), "database_url": review_db}}
        (self.home / "surd.toml").write_text(toml(cfg))
        self.env = {
            **self.server.env,
            "SURD_CONFIG": str(self.home / "surd.toml"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONWARNINGS": "ignore",
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # production polls every 10 s; a test has no time
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        }
        prefect_file = self.home / "prefect.yaml"
        self.surd("deploy", "render", "--out", str(prefect_file), env={"SURD_DEPLOY__WORKDIR": str(ROOT)})
        self.surd("deploy", "setup")
        self.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(prefect_file),
            ]
        )
        for pool in ("cpu", "gpu"):
            self.spawn(f"worker-{pool}", ["deploy", "worker", "--pool", pool, "--name", f"rehearsal-{pool}"])
        self.review_url = f"http://127.0.0.1:{free_port()}"
        port = self.review_url.rsplit(":", 1)[1]
        review = self.spawn("review", ["review", "serve", "--host", "127.0.0.1", "--port", port])
        wait_until_up(f"{self.review_url}/login", review, 120, "review server", lambda: self.log("review"))
        return self

    def surd(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """A short `surd` command, forked from the test session's fork server (tests/forkserver.py:
        a process of its own, without paying the imports again)."""
        done = forkserver.surd(*args, env={**self.env, **(env or {})}, timeout=300, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"surd {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done  # type: ignore[no-any-return]

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            argv, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=300
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv[2:])} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.home / f"{name}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "surd", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    # -- Prefect -------------------------------------------------------------------------------
    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        assert self.server is not None
        return SyncPrefectClient(self.server.url)

    def start_run(self, deployment: str, parameters: dict[str, Any] | None = None) -> Any:
        with self.client() as c:
            dep = c.read_deployment_by_name(deployment)
            return c.create_flow_run_from_deployment(dep.id, parameters=parameters or {}).id

    def runs_of(self, deployment: str) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        with self.client() as c:
            dep = c.read_deployment_by_name(deployment)
            runs = c.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[dep.name]))
            )
        return [r for r in runs if r.deployment_id == dep.id]

    def wait(self, predicate: Any, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            assert not dead, (f"{dead} exited while waiting for {what}", {n: self.log(n) for n in dead})
            assert time.monotonic() < deadline, (
                f"no {what} in {timeout:.0f} s",
                {n: self.log(n)[-1500:] for n in ("worker-cpu", "worker-gpu")},
            )
            time.sleep(1)

    def finished(self, deployment: str, n: int) -> list[Any]:
        """Wait for `n` runs of `deployment` to end; the ended runs, oldest first (a schedule's
        future runs are not among them)."""
        self.wait(
            lambda: sum(r.state_type.value in DONE for r in self.runs_of(deployment)) >= n,
            f"{n} finished run(s) of {deployment}",
        )
        ended = [r for r in self.runs_of(deployment) if r.state_type.value in DONE]
        return sorted(ended, key=lambda r: r.created)

    def task_runs(self, flow_run_id: Any) -> dict[str, str]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with self.client() as c:
            this = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            return {t.name: t.state_type.value for t in c.read_task_runs(flow_run_filter=this)}

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.server is not None:
            self.server.stop()
        if self.pg is not None:
            self.pg.stop()
