"""The stage runner on its own (surd.stages.base): counts add up, a killed run resumes without a
gap or a duplicate, partitions add up to a single run, and the one in-order map keeps order and
its bound. The stage under test is a complete filter stage, written as a new one would be."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from storage.layout import DataDir
from storage.schemas import DROPPED, OK, STATUS_FIELDS
from surd import chain
from surd.config import load_settings
from surd.parallel import in_order
from surd.stages.base import Filter, Stage, merge, run_stage


# ---- a new filter stage: everything it says is below -------------------------------------------
class PromptWords(Filter):
    """Keeps a caption of at least `min_words` words; drops the rest as `too_short`."""

    name, label = "prompt_words", "captions of 3+ words"
    reads: ClassVar = {"captions": ("simple_prompt",)}
    schema = pa.schema([*STATUS_FIELDS, pa.field("words", pa.int32())])  # and the count, kept
    min_words = 3

    def keep(self, row: dict[str, Any]) -> tuple[bool, str | None]:
        return self.extra(row)["words"] >= self.min_words, "too_short"

    def extra(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"words": len((row["simple_prompt"] or "").split())}


# ---- the tests --------------------------------------------------------------------------------
class Killed(PromptWords):
    """Dies at its `fail_on_batch`-th batch, as a killed run would."""

    fail_on_batch = 4

    def decide(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches_seen = getattr(self, "batches_seen", 0) + 1
        if self.batches_seen == self.fail_on_batch:
            raise RuntimeError("killed")
        return super().decide(batch)


def words(settings: Any, data: DataDir, cls: type[Stage[Any]] = PromptWords) -> Stage[Any]:
    return cls(settings, data, upstream=("captions",))


def captions(tmp_path: Path, n: int = 37) -> tuple[Any, DataDir]:
    settings = load_settings(data_root=str(tmp_path / "data"), part_size=5)
    data = chain.PIPELINE.data_dir(settings.data_root).open()
    rows = [
        {"sample_id": f"s{i:03d}", "status": OK, "reason": None, "model_id": "x",
         "simple_prompt": " ".join(["word"] * (i % 5))}  # 0..4 words
        for i in range(n)
    ]  # fmt: skip
    rows.append({"sample_id": "gone", "status": DROPPED, "reason": "empty_caption", "model_id": "x"})
    chain.PIPELINE  # noqa: B018  (the declaration registers the captions table's schema)
    data.table("captions").write(rows)
    return settings, data


def out_rows(data: DataDir) -> list[dict[str, Any]]:
    return list(data.table("prompt_words", PromptWords.schema).iter_rows())


def test_counts_add_up_and_parts_carry_provenance(tmp_path: Path) -> None:
    settings, data = captions(tmp_path)
    shown: list[int] = []
    run = run_stage(words(settings, data), progress=shown.append)
    assert run.processed == 37 == run.kept + sum(run.dropped.values()) == sum(shown)
    assert run.dropped == {"too_short": sum(1 for i in range(37) if i % 5 < 3)}
    table = data.table("prompt_words", PromptWords.schema)
    assert len(table.parts()) == 8  # 37 rows in parts of 5
    assert all(p["stage"] == "prompt_words" and "settings" in p for p in table.provenance())
    assert {r["words"] for r in out_rows(data)} == {0, 1, 2, 3, 4}
    # nothing pending: nothing read beyond keys and statuses, nothing decided
    again = words(settings, data, Killed)
    assert run_stage(again).processed == 0 and not hasattr(again, "batches_seen")
    assert len(again.pending_ids()) == 0


def test_a_taken_down_item_is_dropped_with_its_takedown(tmp_path: Path) -> None:
    settings, data = captions(tmp_path)
    asked: list[int] = []

    def gone() -> dict[str, int]:
        asked.append(1)
        return {"s004": 7}

    run = run_stage(words(settings, data), taken_down=gone)
    assert run.dropped["takedown"] == 1 and asked == [1]
    [row] = [r for r in out_rows(data) if r["sample_id"] == "s004"]
    assert (row["status"], row["reason"]) == (DROPPED, "takedown:7")
    assert run_stage(words(settings, data), taken_down=gone).processed == 0 and asked == [
        1
    ]  # no work: not asked


def test_a_stage_outside_the_declaration_must_be_told_its_upstream(tmp_path: Path) -> None:
    settings, data = captions(tmp_path)
    with pytest.raises(ValueError, match="not told what comes before it"):
        run_stage(PromptWords(settings, data))


def test_a_run_killed_mid_way_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    settings, data = captions(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        run_stage(words(settings, data, Killed))
    written = out_rows(data)
    assert 0 < len(written) < 37  # the parts decided before the kill are durable
    rest = run_stage(words(settings, data))
    assert rest.processed == 37 - len(written)
    ids = [r["sample_id"] for r in out_rows(data)]
    assert sorted(ids) == [f"s{i:03d}" for i in range(37)]  # no gap, no duplicate


def test_partitions_add_up_to_a_single_run(tmp_path: Path) -> None:
    settings, data = captions(tmp_path / "one")
    single = run_stage(words(settings, data))
    settings2, data2 = captions(tmp_path / "split")
    parts = [run_stage(words(settings2, data2), part=(k, 3)) for k in range(3)]
    assert all(p.processed > 0 for p in parts)
    merged = merge(parts)
    assert merged.partitions == 3
    assert (merged.processed, merged.kept, merged.dropped) == (single.processed, single.kept, single.dropped)
    key = lambda r: r["sample_id"]  # noqa: E731
    assert sorted(out_rows(data2), key=key) == sorted(out_rows(data), key=key)


def test_in_order_keeps_order_and_its_bound() -> None:
    in_flight, most = 0, 0
    lock = threading.Lock()

    def work(x: int) -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        threading.Event().wait(0.001 * (x % 3))
        with lock:
            in_flight -= 1
        return x * x

    submitted = []
    with ThreadPoolExecutor(8) as pool:

        def submit(x: int) -> Any:
            submitted.append(x)
            return pool.submit(work, x)

        out = []
        for x, y in in_order(range(50), submit, window=3):
            assert len(submitted) - len(out) <= 3  # never more than the window ahead
            out.append((x, y))
    assert out == [(x, x * x) for x in range(50)]
    assert most <= 3


def test_the_declaration_names_every_batch_stage_once_with_its_upstream() -> None:
    p = chain.PIPELINE
    assert p.tables[0] == "raw_items" and len(set(p.tables)) == len(p.tables)
    for k, cls in enumerate(p, start=1):
        assert issubclass(cls, Stage) and p.stage_class(cls.name) is cls
        assert p.upstream(cls.name) == tuple(p.tables[:k])
        assert cls.schema.names[:3] == ["sample_id", "status", "reason"]
        assert cls.pool in ("cpu", "gpu") and cls.scale in ("one", "partitions", "parts")
    with pytest.raises(KeyError, match="the stages are"):
        p.stage_class("nope")
    with pytest.raises(ValueError, match="appears twice"):
        chain.declare(*p.stages, p.stages[0])


def test_threads_are_planned_from_the_stage_s_own_workers(tmp_path: Path, monkeypatch) -> None:
    import os

    import torch

    from surd.parallel import plan_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert plan_threads(None, 15) == 1  # beside a GPU: 15 decode workers, 1 model thread
    assert plan_threads(None, 0) == 16  # on CPU: the model takes the cores
    assert plan_threads(None, 0, processes_per_host=4) == 4  # 4 local Dask workers share them
    assert plan_threads(3, 15) == 3  # the setting wins
    assert plan_threads(None, 40) == 1
    monkeypatch.undo()
    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, ""))  # restored after the test
    try:
        settings, data = captions(tmp_path)
        stage = words(settings.model_copy(update={"model_threads": 1}), data)
        assert stage.threads(0) == 1 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
