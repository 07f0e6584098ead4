"""A release shard written on a disk that fills: the failure is raised once, and nothing is left
for the writer's finalizer to fail on again (which would print a traceback under the CLI's line)."""

from __future__ import annotations

import errno
import gc
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from storage import releases

SCHEMA = pa.schema([("a", pa.string())])


@pytest.mark.parametrize("room", [10, 400, 1200, 2400])
def test_a_shard_on_a_full_disk_fails_once_and_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    written = {"n": 0}
    real = releases._HashingFile.write

    def write(self: Any, data: Any) -> int:
        if not self.discarding:
            written["n"] += len(memoryview(data).cast("B"))
            if written["n"] > room:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(releases._HashingFile, "write", write)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    shard = releases.ShardFile(tmp_path / "shard.parquet", 10, SCHEMA)
    with pytest.raises(OSError) as failed:
        for _ in range(40):
            shard.add({"a": "x" * 100}, 100)
        shard.close()
    assert failed.value.errno == errno.ENOSPC
    shard.abort()  # what write_shards does for the shards still open: harmless twice
    del shard
    gc.collect()
    assert unraisable == []
