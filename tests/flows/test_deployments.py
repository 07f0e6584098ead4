"""The deployed path: a real Prefect server process, `surd deploy setup` and `surd deploy serve`,
the cron schedule registered, and a release event that runs embed → train → evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.rebuild import release_limit
from tests.conftest import free_port
from tests.prefect_server import PrefectServer

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[2]


def _toml(d: dict, prefix: str = "") -> str:
    """The few types the demo config holds (str, int, float, bool, list of str, nested dicts)."""
    flat, nested = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            nested.append(_toml(v, f"{prefix}{k}."))
        else:
            flat.append(f"{k} = {json.dumps(v)}")
    head = f"[{prefix[:-1]}]\n" if prefix and flat else ""
    return head + "\n".join(flat) + "\n\n" + "".join(nested)


def test_prefect_yaml_is_what_the_declaration_renders() -> None:
    """One source for schedules and pools: the committed file is `surd deploy render`'s output
    with the default settings, and each of its deployments names its flow's function."""
    from flows.deployments import plans, render_yaml
    from surd.config import load_settings

    assert (ROOT / "prefect.yaml").read_text() == render_yaml(load_settings()), (
        "prefect.yaml differs from the declaration: run `surd deploy render --out prefect.yaml`"
    )
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    for full, plan in plans().items():
        d = deps[full.split("/")[1]]
        assert d["work_pool"]["name"] == plan.pool
        module, fn = d["entrypoint"].split(":")
        assert (
            getattr(__import__(module.replace("/", ".").removesuffix(".py"), fromlist=[fn]), fn) is plan.flow
        )
        assert ("schedules" in d) == bool(plan.cron) and ("triggers" in d) == bool(plan.event)
    # the GPU stages have a deployment on the gpu pool; the rebuild itself runs on cpu
    assert deps["gpu"]["work_pool"]["name"] == "gpu" and deps["rebuild"]["work_pool"]["name"] == "cpu"
    custom = render_yaml(load_settings(deploy={"rebuild_cron": "5 4 * * 2", "workdir": "/srv/surd"}))
    assert "cron: 5 4 * * 2" in custom and "directory: /srv/surd" in custom


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = PrefectServer(tmp_path_factory.mktemp("prefect"), free_port()).start()
    yield s
    s.stop()


def _client(server):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self):
            self.ts = temporary_settings({PREFECT_API_URL: server.url})
            self.ts.__enter__()
            self.c = SyncPrefectClient(server.url)
            self.c.__enter__()
            return self.c

        def __exit__(self, *exc):
            self.c.__exit__(*exc)
            self.ts.__exit__(*exc)

    return _Ctx()


@pytest.mark.slow
def test_deploy_setup_and_serve_register_every_deployment_pool_and_limit(
    server, tmp_path: Path, replay
) -> None:
    """`surd deploy setup` makes the pools and limits, `surd deploy serve` registers every declared
    deployment with its schedule and parameters from the settings. That a release event runs
    embed → train → evaluate on the GPU pool, once per release, is the rehearsal's to show
    (tests/test_rehearsal.py: the same deployments, run by the workers as production runs them)."""
    from surd.app.demo import demo_config
    from surd.config import load_settings

    cfg = demo_config(tmp_path / "data", replay)
    cfg["deploy"] = {"rebuild_cron": "17 4 * * 2"}
    toml = tmp_path / "surd.toml"
    toml.write_text(_toml(cfg))
    settings = load_settings(config_file=toml)
    env = {**server.env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    surd = [sys.executable, "-m", "surd"]
    setup = subprocess.run(
        [*surd, "deploy", "setup", "--config", str(toml)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert setup.returncode == 0, setup.stderr
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [*surd, "deploy", "serve", "--config", str(toml)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with _client(server) as client:
            deadline = time.monotonic() + 180
            while True:
                try:
                    dep = {
                        n: client.read_deployment_by_name(f"{n}/{n}")
                        for n in ("rebuild", "release", "embed", "train", "evaluate")
                    }
                    dep["stages"] = client.read_deployment_by_name("stages/gpu")
                    break
                except Exception as exc:  # not registered yet: keep polling, with the reason kept
                    last = exc
                assert serve.poll() is None and time.monotonic() < deadline, (
                    last,
                    (tmp_path / "serve.log").read_text()[-3000:],
                )
                time.sleep(1)
            assert dep["rebuild"].schedules[0].schedule.cron == "17 4 * * 2"
            assert dep["rebuild"].parameters == {"train": False}
            limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits()}
            assert limits[release_limit(settings)] == 1  # one release of this data root at a time
            assert limits["crawl-civitai"] == 1 and {p.name for p in client.read_work_pools()} >= {
                "cpu",
                "gpu",
            }
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
