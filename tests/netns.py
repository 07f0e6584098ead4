"""Several hosts on one machine: a network namespace each, joined by a bridge (as root, where the
kernel allows it; ENVIRONMENT.md section 10). Each host has its own address and loopback; they
share the filesystem, which stands in for the shared POSIX filesystem (NFS) of a real cluster.
Where namespaces cannot be made, `Hosts.make` falls back to plain processes on 127.0.0.1 and
says so (`isolated` is False). Everything made is removed by `close`."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Hosts:
    names: list[str]
    isolated: bool
    why: str = ""
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    addresses: dict[str, str] = field(default_factory=dict)
    this: str = "127.0.0.1"  # the test process's own address, as the hosts reach it

    @classmethod
    def make(cls, names: list[str]) -> Hosts:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return cls._loopback(names, "not root, or no `ip`")
        hosts = cls(names, True)
        try:
            hosts._create()
        except (subprocess.CalledProcessError, OSError) as exc:
            hosts.close()
            err = (
                exc.stderr.decode(errors="replace").strip()
                if isinstance(exc, subprocess.CalledProcessError)
                else exc
            )
            return cls._loopback(names, f"namespaces refused: {err}")
        return hosts

    @classmethod
    def _loopback(cls, names: list[str], why: str) -> Hosts:
        return cls(names, False, why, addresses=dict.fromkeys(names, "127.0.0.1"))

    @property
    def bridge(self) -> str:
        return f"sb{self.tag}"

    def ns(self, name: str) -> str:
        return f"surd-{self.tag}-{name}"

    def _create(self) -> None:
        net = f"10.{77 + int(self.tag[:2], 16) % 100}.0"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{net}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        self.this = f"{net}.1"
        for k, name in enumerate(self.names, start=2):
            ns, host_end, ns_end = self.ns(name), f"v{self.tag}{k}", f"p{self.tag}{k}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("link", "set", ns_end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{net}.{k}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.addresses[name] = f"{net}.{k}"

    def command(self, name: str, argv: list[str]) -> list[str]:
        """`argv` as run on host `name`."""
        return ["ip", "netns", "exec", self.ns(name), *argv] if self.isolated else argv

    def popen(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(name, argv),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def close(self) -> None:
        if not self.isolated:
            return
        for name in self.names:
            subprocess.run(["ip", "netns", "del", self.ns(name)], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
