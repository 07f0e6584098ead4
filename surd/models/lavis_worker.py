"""The LAVIS captioning worker: the paper's own captioner, in its own environment.

LAVIS pins transformers < 4.27 and numpy < 2, so it cannot live beside this project's stack; it
runs in `.venv-lavis` (`make lavis-env`) as this script, and the caption stage talks to it over
JSON lines (`caption.backend = "lavis"`). Only the standard library, torch, PIL and LAVIS are
imported here (and `storage/torch_compat.py`, which needs torch alone).

    .venv-lavis/bin/python surd/models/lavis_worker.py --device cpu [--random-weights --vocab VOCAB]
    stdin:  {"images": ["<base64 image bytes>", ...]}       one request per line
    stdout: {"ready": true, ...} once, then {"captions": [...]} or {"error": "..."} per request

`--random-weights` builds LAVIS' BLIP caption model with random weights and a tokenizer from a
local vocab file (no hub, no checkpoint download): the offline test of the worker.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from pathlib import Path

# the script's own folder (surd/models/) must not shadow the standard library or LAVIS' own
# packages: put the repository root there instead, for `storage.torch_compat`
sys.path[0] = str(Path(__file__).resolve().parents[2])


def load(args: argparse.Namespace):
    from storage.torch_compat import install  # after sys.path is set, in LAVIS venv

    install()
    import torch

    if args.random_weights:
        from lavis.models.blip_models.blip import BlipBase
        from lavis.models.blip_models.blip_caption import BlipCaption
        from transformers import BertTokenizer

        def init_tokenizer(cls):
            tok = BertTokenizer(args.vocab)
            tok.add_special_tokens({"bos_token": "[DEC]"})
            tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
            tok.enc_token_id = tok.additional_special_tokens_ids[0]
            return tok

        BlipBase.init_tokenizer = classmethod(init_tokenizer)
        BlipCaption.load_checkpoint_from_config = lambda *a, **k: None
        torch.manual_seed(args.seed)
    from lavis.models import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess("blip_caption", "base_coco", is_eval=True, device=args.device)
    return torch, model, vis["eval"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-beams", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=30)
    ap.add_argument("--min-length", type=int, default=10)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--vocab", help="a BERT vocab file (with --random-weights)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from PIL import Image

    torch, model, processor = load(args)
    out = sys.stdout
    out.write(
        json.dumps(
            {"ready": True, "model": "lavis:blip_caption/base_coco", "random_weights": args.random_weights}
        )
        + "\n"
    )
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            images = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in req["images"]]
            batch = torch.stack([processor(im) for im in images]).to(args.device)
            with torch.inference_mode():
                caps = model.generate(
                    {"image": batch},
                    num_beams=args.num_beams,
                    max_length=args.max_length,
                    min_length=args.min_length,
                )
            out.write(json.dumps({"captions": [c.strip() for c in caps]}) + "\n")
        except Exception as exc:  # reported to the caller, which records it; the worker stays up
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
