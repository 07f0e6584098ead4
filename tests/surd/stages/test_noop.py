"""A rerun with nothing to do reads keys and statuses, never the stored image bytes."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
import pytest

from storage import funnel
from surd import chain, pipeline
from tests.conftest import through_review


@pytest.mark.slow  # the demo's stages twice: 11 s
def test_a_rerun_with_nothing_to_do_never_reads_image_bytes(reviewed_settings, monkeypatch) -> None:
    s = reviewed_settings
    first = pipeline.release(s)
    assert first is not None
    reads: list[tuple[str, Any]] = []  # (file, columns asked for; None = every column)
    real_read_table, real_file = pq.read_table, pq.ParquetFile

    def read_table(source: Any, *args: Any, columns: Any = None, **kw: Any) -> Any:
        reads.append((str(source), columns))
        return real_read_table(source, *args, columns=columns, **kw)

    class Recording(real_file):  # type: ignore[misc, valid-type]
        def __init__(self, source: Any, *args: Any, **kw: Any) -> None:
            self.source = str(source)
            super().__init__(source, *args, **kw)

        def iter_batches(self, *args: Any, columns: Any = None, **kw: Any) -> Any:
            reads.append((self.source, columns))
            return super().iter_batches(*args, columns=columns, **kw)

        def read(self, columns: Any = None, **kw: Any) -> Any:
            reads.append((self.source, columns))
            return super().read(columns=columns, **kw)

        def read_row_group(self, i: int, columns: Any = None, **kw: Any) -> Any:
            reads.append((self.source, columns))
            return super().read_row_group(i, columns=columns, **kw)

    queries: list[str] = []  # what the funnel (storage.funnel) asked DuckDB: keys and statuses only
    real_connect = funnel.duckdb.connect

    class Recorded:
        def __init__(self) -> None:
            self.con = real_connect()

        def execute(self, sql: str, params: Any = None) -> Any:
            queries.append(sql)
            return self.con.execute(sql, params)

        def sql(self, sql: str, params: Any = None) -> Any:
            queries.append(sql)
            return self.con.sql(sql, params=params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.con, name)

    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(pq, "ParquetFile", Recording)
    monkeypatch.setattr(funnel.duckdb, "connect", Recorded)
    assert [r.processed for r in pipeline.run_all(s)] == [0] * len(chain.PIPELINE.stages)
    pipeline.review(s)
    assert pipeline.release(s) == first  # nothing changed: no new release
    images = [cols for src, cols in reads if "/tables/images/" in src]
    assert all(cols is not None and "image" not in cols for cols in images), images
    assert queries and not any("image" in q.replace("/tables/images/", "") for q in queries), queries
    assert all("select *" not in q for q in queries), queries


NOOP = """
import json, sys
from surd import pipeline
from surd.config import load_settings

s = load_settings(**json.loads(sys.argv[1]))
runs = [pipeline.run(s, "captions").processed, pipeline.run(s, "clip_scores").processed]
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "open_clip"})
print(json.dumps({"processed": runs, "heavy": heavy}))
"""


@pytest.mark.slow  # a subprocess, to see what it imports
def test_a_model_stage_with_nothing_to_do_imports_no_model_library(demo_settings) -> None:
    import json
    import subprocess
    import sys

    s = demo_settings
    through_review(s)  # captions and CLIP scores made: nothing left for either stage
    light = {"data_root": str(s.data_root), "profile": "tiny", "device": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", NOOP, json.dumps(light)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == {"processed": [0, 0], "heavy": []}
