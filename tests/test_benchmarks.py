"""The benchmark scripts run on CPU with tiny sizes (their figures are in docs/benchmarks.md)."""

import sys
from pathlib import Path

import pytest

from surd import chain

pytestmark = pytest.mark.slow  # subprocesses, servers or a browser: not in `make test-fast`

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_embed_benchmark(tmp_path: Path) -> None:
    import bench_embed

    r = bench_embed.main(
        ["--preset", "tiny", "--prompts", "64", "--naive", "4", "--out", str(tmp_path / "b.jsonl")]
    )
    assert r["prompts_per_s"] > 0 and r["naive_prompts_per_s"] > 0
    assert (tmp_path / "b.jsonl").read_text().count("\n") == 1


def test_embed_breakdown_and_writer() -> None:
    import bench_embed

    r = bench_embed.main(["--preset", "tiny", "--prompts", "64", "--breakdown", "--writer", "16"])
    b = r["breakdown"]
    assert r["writer_prompts_per_s"] > 0 and b["batches"] >= 1
    assert all(b[k] > 0 for k in ("model_only_s", "with_hooks_s", "full_run_s", "full_batches_one_length_s"))


def test_compiled_embeddings_check_agrees_with_eager() -> None:
    import check_embed_compiled

    r = check_embed_compiled.main(["--preset", "tiny", "--prompts", "24"])
    assert r["layers"] == 4 and len(r["max_rel_compiled_vs_eager"]) == 4
    assert r["agree"] and r["compiled_repeatable"]
    assert all(0 < x < 0.05 for x in r["max_rel_eager_vs_fp32"])  # bf16 differs from float32, a little


def test_preprocess_profile() -> None:
    import profile_preprocess

    clip_r, cap_r = profile_preprocess.main(
        ["--size", "tiny", "--images", "16", "--inline-images", "8", "--workers", "1"]
    )
    assert clip_r["bench"] == "profile_clip" and cap_r["bench"] == "profile_caption"
    assert clip_r["pool_decode_tokenise_per_s"] > 0 and cap_r["pool_decode_per_s"] > 0
    assert clip_r["model_step_gpu_busy"] is None  # no GPU here


def test_caption_clip_benchmark() -> None:
    import bench_caption_clip

    rs = bench_caption_clip.main(
        [
            "--size",
            "tiny",
            "--images",
            "8",
            "--workers",
            "0",
            "--caption-batch",
            "4",
            "--clip-batch",
            "4",
            "--new-tokens",
            "3",
        ]
    )
    assert [r["bench"] for r in rs] == ["caption"] * 4 + ["clip_filter"]
    assert {(r["search"], r["beams"]) for r in rs[:4]} == {
        (d, b) for d in ("lavis", "generate") for b in (1, 3)
    }
    assert all(r.get("images_per_s", r.get("samples_per_s")) > 0 for r in rs)
    assert all(r.get("model_only_images_per_s", r.get("model_only_samples_per_s")) > 0 for r in rs)


def test_adapter_step_benchmark() -> None:
    import bench_adapter_step

    rs = bench_adapter_step.main(
        ["--size", "tiny", "--batch", "2", "--steps", "1", "--modes", "cached", "uncached"]
    )
    assert [r["mode"] for r in rs] == ["cached", "uncached"] and all(r["s_per_step"] > 0 for r in rs)


def test_images_benchmark_ours_only(tmp_path: Path) -> None:
    import bench_images

    r = bench_images.main(
        ["--images", "30", "--processes", "2", "--threads", "8", "--cache", str(tmp_path / "c")]
    )
    assert r["surd_images_per_s"] > 0 and r["surd_ok"] == 29  # item 0 is both truncated and a 404


def test_review_benchmark_tiny(tmp_path: Path) -> None:
    import bench_review

    [r] = bench_review.main(
        [
            "--stewards",
            "4",
            "--items",
            "30",
            "--workers",
            "1",
            "--backends",
            "sqlite",
            "--out",
            str(tmp_path / "r.jsonl"),
        ]
    )
    assert r["errors"] == 0 and r["final_items"] == 30 and r["decisions"] >= 30 and r["decide_p95_ms"] > 0
    assert r["lost"] == 0 and r["log_rows"] >= r["acknowledged"] == r["decisions"]


def test_review_browser_benchmark_tiny() -> None:
    import bench_review

    grid, single = bench_review.main(["--mode", "browser", "--items", "26"])
    assert (grid["view"], grid["decisions"], grid["log_rows"], grid["views_logged"]) == (
        "grid",
        26,
        26,
        ["grid"],
    )
    assert grid["keystrokes_per_decision"] == round(2 / 26, 3)  # a page of 24, then one of 2
    assert (single["decisions"], single["keystrokes_per_decision"], single["views_logged"]) == (
        26,
        1.0,
        ["single"],
    )
    assert grid["server_ms_per_page_p95"] > 0 and single["server_cpu_ms_per_decision"] > 0


def test_detector_benchmark_tiny() -> None:
    import bench_review

    rows = bench_review.main(["--mode", "detector", "--images", "2", "4", "--batch", "1", "2"])
    assert [(r["images"], r["batch"]) for r in rows] == [(2, 1), (2, 2), (4, 1), (4, 2)]
    assert all(r["images_per_s"] > 0 and "open_nsfw" in r["model"] for r in rows)


def test_release_benchmark_tiny(tmp_path: Path) -> None:
    import bench_release

    r = bench_release.main(
        ["--samples", "40", "--part-size", "16", "--shard-rows", "16", "--out", str(tmp_path / "r.jsonl")]
    )
    assert r is not None and r["rows"] == 40 and r["seconds"] > 0
    # every split has its shards (an empty split one empty file), each at most the part size
    rows, shards = r["rows_by_split"], r["shards_by_split"]
    assert set(shards) == {"train", "validation", "test"} and sum(rows.values()) == 40
    assert all(shards[s] == max(1, -(-rows.get(s, 0) // 16)) for s in shards), (rows, shards)
    assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
    assert (tmp_path / "r.jsonl").read_text().count("\n") == 1


def test_dedup_benchmark() -> None:
    import bench_dedup

    [speed] = bench_dedup.main(["--hashes", "3000", "--part", "100"])
    assert speed["hashes"] == 3000 and speed["seconds"] > 0 and speed["peak_rss_mb"] > 0
    runs = bench_dedup.main(["--labelled", "120", "--workers", "1"])
    assert [r["confirm_max"] for r in runs] == [256, 32]
    for r in runs:
        assert r["distinct"] + r["planted"] == 120 and r["planted"] > 0
        assert r["planted"] - r["missed_duplicates"] == sum(
            int(v.split("/")[0]) for v in r["caught_by_kind"].values()
        )


def test_scale_benchmark(tmp_path: Path) -> None:
    import bench_scale

    # the script as a whole is benchmarks' to run (docs/benchmarks.md); here: a crawl, the images and
    # the first model stage, each measured as a process of its own and again as a no-op
    first_model = next(s.name for s in chain.PIPELINE if s.pool == "gpu")
    rs = bench_scale.main(["--items", "60", "--data-root", str(tmp_path / "data"), "--upto", first_model])
    assert [r["stage"] for r in rs] == ["crawl", *chain.PIPELINE.before(first_model), first_model]
    assert rs[0]["items"] == 60 and rs[1]["items"] == 60 and rs[1]["false_duplicates"] == 0
    assert all(r["cpu_seconds"] > 0 and r["peak_rss_mb"] > 0 and r["noop_seconds"] > 0 for r in rs)
    assert rs[-1]["items"] > 0


def test_near_duplicates_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench_near_dups

    from surd.stages import near_index

    monkeypatch.setattr(near_index, "EXACT_MAX", 1000)  # the inverted-file path, at a small size
    r = bench_near_dups.main(["--n", "3000", "--dim", "32", "--out", str(tmp_path / "b.jsonl")])
    assert r["index"] == "ivf-sq-fp16" and r["planted"] > 0 and r["wrongly_grouped"] == 0
    assert r["caught"] >= 0.9 * r["planted"] and r["peak_rss_mb"] > 0


def test_the_prepared_gpu_check_runs_every_section_in_smoke_mode(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py on the CPU with tiny models: every section gives a result, every
    exact change is identical (or within bf16), and each line is on disk as it comes."""
    import json

    import gpu_check

    out = tmp_path / "gpu.jsonl"
    gpu_check.main(["--smoke", "--out", str(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    by = {x["section"]: x for x in lines}
    assert not [x for x in lines if "error" in x], [x for x in lines if "error" in x]
    assert {"card_before", "disk", "blip_model_lavis", "blip_model_transformers", "blip_sdpa_vision"} <= set(
        by
    )
    assert {"clip_tokenize", "clip_model", "clip_writer_columns", "blip_stage", "clip_stage"} <= set(by)
    assert {"embed_model_llama-7b", "embed_stage_parts_by_bytes_dedupe", "embed_model_llama-13b"} <= set(by)
    assert {"card_after", "done"} <= set(by)
    for name in ("blip_model_lavis", "blip_model_transformers", "clip_tokenize", "clip_writer_columns"):
        assert by[name]["identical"] is True and by[name]["a_median_s"] > 0 and by[name]["speedup"] > 0
    assert by["embed_model_llama-7b"]["within_bf16"] is True
    assert by["blip_stage"]["processed"] == 16 and by["clip_stage"]["processed"] == 32


def test_the_gpu_check_skips_what_the_budget_cannot_hold(tmp_path: Path) -> None:
    import json

    import gpu_check

    out = tmp_path / "gpu.jsonl"
    gpu_check.main(["--smoke", "--budget-s", "1", "--only", "card", "disk", "embed", "--out", str(out)])
    by = {x["section"]: x for x in map(json.loads, out.read_text().splitlines())}
    assert list(by) == ["card_before", "disk", "embed", "card_after", "done"]
    assert "skipped" in by["embed"] and "skipped" not in by["disk"]  # 1.2 s needed, under 1 s left
