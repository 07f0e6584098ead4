"""Runs in LAVIS' venv (transformers 4.26, what LAVIS and so the paper used): BLIP's text decoder
`generate`, called the way LAVIS' `blip_caption` calls it, on weights and inputs saved by the main
venv, for tests/surd/models/test_lavis.py.

    .venv-lavis/bin/python tests/surd/models/blip426.py IN.pt OUT.pt
"""

import sys

import torch
from transformers import BlipConfig, BlipForConditionalGeneration

bundle = torch.load(sys.argv[1])
model = BlipForConditionalGeneration(
    BlipConfig(vision_config=bundle["vision"], text_config=bundle["text"])
).eval()
missing, unexpected = model.load_state_dict(bundle["state"], strict=False)
assert not [k for k in missing if not k.endswith("position_ids")], missing
assert not unexpected, unexpected
out = {}
tc = model.config.text_config
ids = bundle["input_ids"].clone()
ids[:, 0] = tc.bos_token_id  # as LAVIS' blip_caption.generate: [DEC] first, trailing [SEP] dropped
ids = ids[:, :-1]
with torch.no_grad():
    image = model.vision_model(pixel_values=bundle["pixel_values"])[0]
    for name, kwargs in bundle["runs"].items():
        visual = image.repeat_interleave(kwargs["num_beams"], dim=0)  # as LAVIS' generate_from_encoder
        out[name] = model.text_decoder.generate(
            input_ids=ids,
            eos_token_id=tc.sep_token_id,
            pad_token_id=tc.pad_token_id,
            repetition_penalty=1.0,
            encoder_hidden_states=visual,
            encoder_attention_mask=torch.ones(visual.shape[:-1], dtype=torch.long),
            **kwargs,
        )
torch.save(out, sys.argv[2])
