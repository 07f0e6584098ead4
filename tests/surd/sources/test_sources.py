"""Golden tests: the connectors extract exactly the prompts of the recorded responses."""

import json

import pytest

from surd.ids import normalise_prompt
from surd.sources import civitai, lexica, sdonline
from surd.sources.base import ParseError
from tests.conftest import FIXTURES

CIV = FIXTURES / "civitai"


def test_civitai_images_page_2024() -> None:
    payload = json.loads((CIV / "images_v1_limit1_2024-04.json").read_text())
    page = civitai.parse_page(payload, "https://civitai.com")
    assert page.next_position == "1|1712265847499"
    [item] = page.items
    assert item.complex_prompt == payload["items"][0]["meta"]["prompt"]
    assert item.image_key == "cc242d6c-f960-4274-aa1d-f22a71e705ef"
    assert "/width=512/" in item.image_url  # 832x1216 portrait: width 512 gives a 512 short side
    row = item.to_row("c1")
    assert row["status"] == "ok" and row["complex_prompt"] == normalise_prompt(item.complex_prompt)


def test_civitai_wiki_example_keeps_weights_and_lora_verbatim() -> None:
    page = civitai.parse_page(json.loads((CIV / "images_v1_wiki_example_2023-04.json").read_text()), "")
    assert page.next_position == "101"
    prompt = page.items[0].to_row("c")["complex_prompt"]
    assert prompt.startswith("<lora:setsunaTokage_v10:0.6>, green hair") and "(ribbed dress)" in prompt
    assert page.items[0].meta["clip_skip"] == "2"


def test_civitai_edge_cases() -> None:
    cases = {
        c["case"]: c
        for c in json.loads((CIV / "models_v1_images_edge_cases_2023-08-19.json").read_text())["cases"]
    }

    def row(case: str) -> dict:
        return civitai.parse_item(cases[case]["image"], "").to_row("c")

    assert row("meta_null")["reason"] == "no_prompt"
    assert row("meta_without_prompt")["reason"] == "no_prompt"
    assert row("empty_prompt")["reason"] == "no_prompt"
    assert row("type_video")["reason"] == "not_an_image_type:video"
    assert row("prompt_without_negativePrompt")["negative_prompt"] is None
    assert row("prompt_without_negativePrompt")["status"] == "ok"


def test_civitai_nested_meta_is_unwrapped() -> None:
    obj = {
        "id": 5,
        "url": "https://image.civitai.com/k/u-1/width=450/5.jpeg",
        "width": 900,
        "height": 600,
        "meta": {"id": 5, "meta": {"prompt": "a  castle ,  at night", "clipSkip": 2}},
    }
    item = civitai.parse_item(obj, "")
    assert item.to_row("c")["complex_prompt"] == "a castle, at night"
    assert item.meta["clip_skip"] == 2
    assert "/width=800/" in item.image_url  # 900x600: the short side needs 768 wide → 800


@pytest.mark.parametrize("payload", [[], {"items": "x"}, {"error": "busy"}])
def test_civitai_malformed_page(payload: object) -> None:
    with pytest.raises(ParseError):
        civitai.parse_page(payload, "")


def test_lexica_search_doc_example() -> None:
    page = lexica.parse_search(
        json.loads((FIXTURES / "lexica" / "search_v1_docs_example.json").read_text()), ""
    )
    [item] = page.items
    assert item.to_row("c")["complex_prompt"] == "cute chubby blue fruits icons for mobile game ui"
    assert item.seed == "1413536227" and page.next_position is None


def test_sdonline_listing_and_detail() -> None:
    sd = FIXTURES / "stablediffusionweb"
    cards = sdonline.parse_listing((sd / "prompts_listing_cards_2024-10.html").read_text(), "u")
    assert cards == [
        ("/image/20704909-2048-chengdu-olympics-app-home-page", "20704909"),
        ("/image/21046819-user-interface-icons-for-poolrooms-interaction", "21046819"),
    ]
    item = sdonline.parse_detail((sd / "image_detail_prompt_panel_2024-10.html").read_text(), "u", "1")
    row = item.to_row("c")
    assert row["complex_prompt"] == "user interface, game, for interaction"
    assert row["negative_prompt"] is None  # the recorded panel holds only ", "
    assert (row["width"], row["height"]) == (1024, 1024)
    assert item.image_url.endswith("d66de660-7951-4eb6-bb28-c18ef4c6a548.jpg")


def test_sdonline_changed_markup_is_a_parser_failure() -> None:
    with pytest.raises(ParseError, match="no result cards"):
        sdonline.parse_listing("<html><body>redesigned</body></html>", "https://x/prompts/a")
    with pytest.raises(ParseError, match="no prompt panel"):
        sdonline.parse_detail("<html><h1>t</h1></html>", "https://x/image/1-a", "1")


def test_civitai_models_pages_match_the_original_surd_outputs() -> None:
    """The 2023 /models pages give exactly the prompts SURD's own pipeline kept for those images."""
    items = [
        i
        for f in ("models_v1_page1_2023-08-19.trimmed.json", "models_v1_page2_2023-08-19.trimmed.json")
        for i in civitai.parse_models_page(json.loads((CIV / f).read_text()), "").items
    ]
    assert len(items) == 68
    by_key = {i.image_key: i.to_row("c") for i in items}
    derived = json.loads((CIV / "surd_derived_data.json").read_text())["items"]
    for d in derived:
        row = by_key[d["url"].split("/")[-3]]
        assert row["complex_prompt"] == normalise_prompt(d["prompt"])
        assert (row["negative_prompt"] or "") == normalise_prompt(d["negativePrompt"])
    captions = [json.loads(line) for line in (CIV / "surd_derived_metadata.jsonl").read_text().splitlines()]
    for c in captions:
        assert by_key[c["file_name"]]["complex_prompt"] == normalise_prompt(c["prompt"])
    nsfw = {i.nsfw_level for i in items}
    assert {"None", "Mature"} <= nsfw


def test_civitai_devdocs_example_and_trpc_answer() -> None:
    dev = civitai.parse_page(json.loads((CIV / "images_v1_devdocs_example_2026.json").read_text()), "")
    assert [i.complex_prompt for i in dev.items] == ["..."]  # the doc elides the prompt itself
    trpc = civitai.parse_trpc_posts(
        json.loads((CIV / "trpc_image.getImagesAsPostsInfinite_2026-04.json").read_text()), ""
    )
    assert len(trpc.items) == 2 and trpc.next_position is None
    assert {i.to_row("c")["reason"] for i in trpc.items} == {"no_prompt"}  # meta is null on that route


def test_lexica_infinite_feed_joins_images_to_prompts() -> None:
    payload = {
        "prompts": [
            {
                "id": "p1",
                "prompt": "a castle,  at dawn",
                "negativePrompt": "blurry",
                "seed": "7",
                "c": 7,
                "model": "lexica-aperture-v2",
                "grid": False,
            }
        ],
        "images": [
            {"id": "i1", "promptid": "p1", "width": 512, "height": 768},
            {"id": "i2", "promptid": "missing"},
        ],
        "nextCursor": 50,
    }
    page = lexica.parse_infinite(payload, "https://lexica.art", "https://image.lexica.art")
    first, orphan = (i.to_row("c") for i in page.items)
    assert first["complex_prompt"] == "a castle, at dawn" and first["negative_prompt"] == "blurry"
    assert first["image_url"] == "https://image.lexica.art/full_jpg/i1" and page.next_position == "50"
    assert orphan["reason"] == "no_prompt"
