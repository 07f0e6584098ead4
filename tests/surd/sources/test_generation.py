"""Generation parameters: typed columns from what each source returned, null where unknown."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from surd.sources import REGISTRY
from surd.sources.civitai import parse_item
from surd.sources.generation import civitai, lexica, page_only


def _row(meta: dict, **typed) -> dict:
    return {"meta_json": json.dumps(meta), **typed}


def test_civitai_in_both_spellings_and_from_a_parsed_api_object() -> None:
    api = {
        "meta": {
            "steps": 45,
            "cfgScale": 5,
            "sampler": "DPM++ 2M",
            "Model": "juggernaut",
            "hashes": {"model": "abc1"},
        }
    }
    infotext = {"meta": {"Steps": "30", "CFG scale": "7.5", "Sampler": "Euler a", "Model hash": "9f0e"}}
    a = civitai(
        _row({**api, "username": "maker", "createdAt": "2024-04-04T21:24:07.499Z"}, seed="1938345220")
    )
    assert (a["steps"], a["cfg_scale"], a["sampler"], a["model_name"], a["model_hash"]) == (
        45,
        5.0,
        "DPM++ 2M",
        "juggernaut",
        "abc1",
    )
    assert a["seed"] == 1938345220 and a["creator"] == "maker"
    assert a["source_created_at"] == datetime(2024, 4, 4, 21, 24, 7, 499000, tzinfo=UTC)
    b = civitai(_row(infotext, model="SD 1.5", width=512, height=768, nsfw_level="Soft"))
    assert (b["steps"], b["cfg_scale"], b["sampler"], b["model_hash"], b["model_name"]) == (
        30,
        7.5,
        "Euler a",
        "9f0e",
        "SD 1.5",
    )
    assert (b["gen_width"], b["gen_height"], b["source_nsfw"], b["seed"], b["creator"]) == (
        512,
        768,
        "Soft",
        None,
        None,
    )
    obj = {
        "id": 7,
        "url": "https://image.civitai.com/x/0d6e3a1c-aaaa-bbbb-cccc-123456789abc/width=512/a.jpeg",
        "width": 512,
        "height": 512,
        "username": "u1",
        "createdAt": "2023-01-02T03:04:05Z",
        "meta": {"prompt": "a cat", "seed": 5, "steps": 20},
    }
    row = parse_item(obj, "https://civitai.com").to_row("crawl-1")
    parsed = REGISTRY["civitai"].generation(row)
    assert (parsed["seed"], parsed["steps"], parsed["creator"]) == (5, 20, "u1")
    assert parsed["source_created_at"] == datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_malformed_values_are_null_never_guessed() -> None:
    bad = {
        "meta": {"steps": "many", "cfgScale": "nan", "sampler": {"a": 1}, "hashes": "x"},
        "createdAt": "yesterday",
    }
    g = civitai(_row(bad, seed="12e3x", width="wide"))
    assert all(
        g[k] is None
        for k in ("steps", "cfg_scale", "sampler", "model_hash", "seed", "gen_width", "source_created_at")
    )
    assert civitai({"meta_json": "not json"})["steps"] is None
    assert civitai(_row({}, seed=str(2**70)))["seed"] is None  # beyond int64: null, not wrapped


def test_lexica_and_sd_online() -> None:
    lx = lexica(
        _row({"guidance": 7, "grid": False}, seed="1413536227", model="stable-diffusion", nsfw_level="sfw")
    )
    assert (lx["cfg_scale"], lx["seed"], lx["model_name"], lx["source_nsfw"], lx["steps"]) == (
        7.0,
        1413536227,
        "stable-diffusion",
        "sfw",
        None,
    )
    sd = page_only(_row({"ratio": "1:1", "style": "Futurism"}, width=1024, height=1024))
    assert (sd["gen_width"], sd["gen_height"]) == (1024, 1024)
    assert all(v is None for k, v in sd.items() if k not in ("gen_width", "gen_height"))
