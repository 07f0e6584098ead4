"""docker-compose.yml validated without an engine (Debian's docker-compose 1.29: `config`), and the
production rules it must keep: health checks, loopback-only ports, secrets only from .env."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LONG_RUNNING = {"postgres", "prefect-server", "minio", "review", "worker-cpu", "worker-gpu"}
ONE_SHOT = {"minio-bucket", "deploy"}


def _compose(
    *args: str, env_file: str | None = ".env.example", files: tuple[str, ...] = ("docker-compose.yml",)
) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose (.ci/run does this)")
    cmd = [exe, *(a for f in files for a in ("-f", f))]
    if env_file:
        cmd += ["--env-file", env_file]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_compose_file_validates_and_keeps_the_production_rules() -> None:
    r = _compose("config")
    assert r.returncode == 0, r.stderr
    spec = yaml.safe_load(r.stdout)
    services = spec["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], name
        assert services[name]["restart"] == "unless-stopped", name
        for port in services[name].get("ports", []):
            host = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host == "127.0.0.1", (name, port)
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker-gpu"]["environment"]["SURD_DEVICE"] == "cuda"
    review_db = services["review"]["environment"]["SURD_REVIEW__DATABASE_URL"]
    assert review_db.startswith("postgresql+psycopg://surd:change-me-postgres@postgres:5432/review")
    for pool in ("cpu", "gpu"):  # a worker checks its machine (`surd doctor`) before it works
        assert services[f"worker-{pool}"]["command"] == ["surd", "deploy", "worker", "--pool", pool]


def test_more_than_one_machine_the_main_host_and_a_gpu_host_join_over_nfs() -> None:
    r = _compose("config", files=("docker-compose.yml", "docker-compose.cluster.yml"))
    assert r.returncode == 0, r.stderr
    main = yaml.safe_load(r.stdout)
    nfs = main["volumes"]["surd-data"]["driver_opts"]
    assert nfs["type"] == "nfs" and "nfsvers=4" in nfs["o"]  # the locks the writers rely on
    for name in ("prefect-server", "postgres", "dask-scheduler"):
        hosts = {
            p.get("host_ip") if isinstance(p, dict) else str(p).split(":")[0]
            for p in main["services"][name]["ports"]
        }
        assert "0.0.0.0" not in hosts and "" not in hosts, (name, hosts)  # the private address only
    assert (
        main["services"]["worker-gpu"]["environment"]["SURD_SCALE__DASK_ADDRESS"]
        == "tcp://dask-scheduler:8786"
    )
    r = _compose("config", files=("docker-compose.gpu-host.yml",))
    assert r.returncode == 0, r.stderr
    gpu = yaml.safe_load(r.stdout)["services"]
    assert set(gpu) == {"worker-gpu", "dask-worker"}
    env = gpu["worker-gpu"]["environment"]
    assert env["PREFECT_API_URL"] == "http://10.0.0.10:4200/api" and env["SURD_PROFILE"] == "real"
    assert gpu["worker-gpu"]["command"] == ["surd", "deploy", "worker", "--pool", "gpu"]
    assert yaml.safe_load(r.stdout)["volumes"]["surd-data"]["driver_opts"]["type"] == "nfs"


def test_secrets_come_only_from_the_env_file(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if (
            re.search(r"(PASSWORD|SECRET|API_KEY|ACCESS_KEY)\w*:\s*\S", line)
            and "${" not in line
            and "*surd-env" not in line
        ):
            pytest.fail(f"a secret value written in docker-compose.yml: {line.strip()}")
    (tmp_path / "empty.env").write_text("")
    missing = _compose("config", "-q", env_file=str(tmp_path / "empty.env"))
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD in .env" in missing.stderr
    example = (ROOT / ".env.example").read_text()
    for key, value in re.findall(r"^(\w+)=(.*)$", example, re.M):
        if re.search("PASSWORD|SECRET|KEY", key):
            assert value == "" or value.startswith("change-me"), key  # placeholders only
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_and_prefect_yaml_use_the_same_work_pools() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pools = {
        s["command"][s["command"].index("--pool") + 1]
        for s in compose["services"].values()
        if "--pool" in s.get("command", [])
    }
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert pools == {d["work_pool"]["name"] for d in deployments} == {"cpu", "gpu"}
    # a worker runs its pool's checks and the flows from the image's working directory
    assert (
        yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"][0][
            "prefect.deployments.steps.set_working_directory"
        ]["directory"]
        == "/app"
    )
