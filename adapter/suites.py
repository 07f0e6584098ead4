"""The evaluation suites of the paper's Sec. 5: Action, Color and Counting, 15 prompts each.

The paper evaluates simple prompts of three kinds and shows examples in its figures, but no source
this project can read offline holds its prompt lists (the public repository ships none), so every
prompt here is ours, written to the same three kinds and marked `origin = "ours"`. A prompt taken
from the paper is to be added with `origin = "paper"`; the report counts both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    text: str
    origin: str  # "paper" | "ours"


def _ours(*texts: str) -> list[Prompt]:
    return [Prompt(t, "ours") for t in texts]


SUITES: dict[str, list[Prompt]] = {
    "action": _ours(
        "a dog running on the beach",
        "a man riding a horse",
        "a cat jumping over a fence",
        "a girl reading a book under a tree",
        "a boy kicking a football",
        "two people dancing in the rain",
        "a bird catching a fish",
        "a chef cutting vegetables",
        "a woman climbing a mountain",
        "a child blowing out birthday candles",
        "a bear swimming in a river",
        "an old man playing the violin",
        "a skateboarder jumping down stairs",
        "a horse pulling a cart",
        "a monkey eating a banana",
    ),
    "color": _ours(
        "a red car on a blue street",
        "a yellow flower in green grass",
        "a white bird in the dark sky",
        "a green apple on a red plate",
        "a purple umbrella in the snow",
        "a black cat on a white sofa",
        "an orange boat on a turquoise lake",
        "a pink house with a blue door",
        "a blue butterfly on a yellow leaf",
        "a silver robot holding a red balloon",
        "a brown dog wearing a green scarf",
        "a golden crown on a black pillow",
        "a white horse in a field of red poppies",
        "a yellow taxi beside a gray building",
        "a blue teapot on a wooden table",
    ),
    "counting": _ours(
        "two cats on a bed",
        "three trees near a lake",
        "four people walking in the city",
        "one red apple and two green apples",
        "five birds on a wire",
        "two dogs and one cat",
        "three candles on a table",
        "four chairs around a round table",
        "two boats on a calm sea",
        "three children holding balloons",
        "six eggs in a basket",
        "two horses in a meadow",
        "three books stacked on a desk",
        "four cupcakes on a plate",
        "one person holding two umbrellas",
    ),
}


def suite_texts(suites: dict[str, list[Prompt]] | None = None) -> dict[str, list[str]]:
    return {k: [p.text for p in v] for k, v in (suites or SUITES).items()}
