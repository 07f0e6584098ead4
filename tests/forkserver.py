"""`surd` commands in processes of their own, forked from a server that imported the command line
once. Each run is a real process: its own pid, environment, working directory, stdin, stdout and
stderr, its own children, and a real SIGKILL ends it. Only the import differs from
`python -m surd` (about 7 s of torch, transformers and the CLI on 2 cores, paid once per test
session instead of once per command); a test about what a fresh interpreter imports starts one
the usual way.

The server never runs a command itself, so it holds no thread and no OpenMP pool when it forks. It
answers JSON lines on its stdin: `run` (fork a child, answer its pid) and `poll` (its exit status,
or null while it runs); the client below wraps that in a `subprocess.Popen`-like object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SERVER = r"""
import json, os, sys, traceback
from storage.torch_compat import install
install()
import surd.app.cli
import torch, transformers, open_clip, diffusers  # what a model stage imports anyway
# what the lazy imports of a demo run load (about 3 s on 2 cores): the adapter's diffusers
# classes, the card's plot, the profanity model, the detector's runtime, the near-duplicate index
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
import diffusers.optimization, matplotlib, matplotlib.pyplot, scipy.stats, profanity_check, onnxruntime, faiss
reply = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the reply pipe

def child(job):
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    os.dup2(os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    import random
    import numpy
    random.seed()
    numpy.random.seed()
    torch.seed()
    sys.argv = ["surd", *job["argv"]]
    code = 0
    try:
        surd.app.cli.main(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

for line in sys.stdin:
    job = json.loads(line)
    if job["op"] == "run":
        pid = os.fork()
        if pid == 0:
            child(job)
        reply.write(json.dumps({"pid": pid}) + "\n")
    else:
        done, status = os.waitpid(job["pid"], os.WNOHANG)
        code = os.waitstatus_to_exitcode(status) if done else None
        reply.write(json.dumps({"code": code}) + "\n")
    reply.flush()
"""


class ForkServer:
    """One server process; `run(argv, env)` starts `surd argv` in a forked child."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="surd-forks-"))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env or dict(os.environ),
            cwd=Path(__file__).resolve().parents[1],
            text=True,
        )
        self.lock = threading.Lock()
        self.count = 0

    def ask(self, job: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self.proc.poll()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def popen(self, argv: list[str], env: dict[str, str], cwd: str | Path | None = None) -> Forked:
        with self.lock:
            self.count += 1
            n = self.count
        out, err = self.dir / f"{n}.out", self.dir / f"{n}.err"
        job = {"op": "run", "argv": list(argv), "env": env, "cwd": str(cwd or os.getcwd())}
        pid = self.ask(job | {"stdout": str(out), "stderr": str(err)})["pid"]
        return Forked(self, pid, out, err)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float = 600, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """What `subprocess.run([... "surd", *argv], capture_output=True, text=True)` gives."""
        p = self.popen(argv, env, cwd)
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(["surd", *argv], p.returncode, out, err)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Forked:
    """A forked `surd` process, as much of `subprocess.Popen` as the tests use."""

    def __init__(self, server: ForkServer, pid: int, out: Path, err: Path) -> None:
        self.server, self.pid, self.out, self.err = server, pid, out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.ask({"op": "poll", "pid": self.pid})["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["surd"], timeout or 0)
            time.sleep(0.05)
        return code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.out.read_text(), self.err.read_text()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)

    def terminate(self) -> None:
        self.send_signal(15)


_SHARED: list[ForkServer] = []


def shared() -> ForkServer:
    """The test session's one fork server, started on first use (its environment is the test
    process's: HF_HUB_OFFLINE and the rest are read at import, so every command sees them)."""
    if not _SHARED:
        import atexit

        _SHARED.append(ForkServer())
        atexit.register(_SHARED[0].close)
    return _SHARED[0]


def surd(*argv: str, env: dict[str, str], timeout: float = 600, cwd: str | Path | None = None) -> Any:
    """`surd argv` in a forked process with exactly `env` (a CompletedProcess)."""
    return shared().run(list(argv), env, timeout=timeout, cwd=cwd)


def surd_popen(*argv: str, env: dict[str, str], cwd: str | Path | None = None) -> Forked:
    """`surd argv` started in a forked process with exactly `env` (a Popen-like object)."""
    return shared().popen(list(argv), env, cwd)
