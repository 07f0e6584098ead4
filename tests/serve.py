"""A real uvicorn server on loopback, in a thread, for tests that speak HTTP to the review app."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import uvicorn


class ThreadedServer:
    def __init__(self, app: object, port: int) -> None:
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("review server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_until_up(
    url: str, proc: subprocess.Popen, timeout: float, what: str, log: Callable[[], str]
) -> None:
    """Poll `url` until it answers 200; fail with the last connection error and `log()` if the
    process exits or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:  # not listening yet: keep polling, remember why
            last = f"{type(exc).__name__}: {exc}"
        if proc.poll() is not None or time.monotonic() > deadline:
            state = (
                f"exited with {proc.returncode}"
                if proc.poll() is not None
                else f"no answer in {timeout:.0f} s"
            )
            raise RuntimeError(f"{what} did not start ({state}; last: {last}):\n{log()}")
        time.sleep(0.2)
