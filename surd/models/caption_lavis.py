"""The LAVIS backend of the caption stage: talks to `surd/models/lavis_worker.py` running in LAVIS' own
environment (`make lavis-env`), one JSON line per batch. Under the `tiny` profile the worker builds
LAVIS' BLIP with random weights and a local vocabulary, so it runs offline."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from surd.models.vocab import WORDS
from surd.settings import Settings, SettingsError
from surd.stages.captions_params import CaptionParams

WORKER = Path(__file__).with_name("lavis_worker.py")
BERT_VOCAB_SIZE = 30522  # bert-base-uncased, which LAVIS' BLIP config expects


def offline_vocab(path: Path) -> Path:
    """A 30,522-line BERT vocab: the special tokens, the tiny profile's words, then fillers."""

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(w.lower() for w in WORDS), ",", "."]
    words += [f"[unused{i}]" for i in range(BERT_VOCAB_SIZE - len(words))]
    path.write_text("\n".join(words) + "\n")
    return path


class LavisCaptioner:
    def __init__(self, settings: Settings, c: CaptionParams) -> None:
        py = Path(c.lavis_python)
        if not py.exists():
            raise SettingsError(
                f"caption.backend=lavis needs LAVIS' own environment at {py}: run `make lavis-env` "
                "(or set SURD_CAPTION__LAVIS_PYTHON)"
            )
        device = "cuda" if settings.device in ("cuda", "auto") and _cuda() else "cpu"
        args = [str(py), str(WORKER), "--device", device, "--num-beams", str(c.num_beams)]
        args += ["--max-length", str(c.max_length), "--min-length", str(c.min_length)]
        self._tmp = tempfile.TemporaryDirectory(prefix="surd-lavis-")
        if settings.profile == "tiny":
            args += ["--random-weights", "--vocab", str(offline_vocab(Path(self._tmp.name) / "vocab.txt"))]
            args += ["--seed", str(settings.seed)]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        ready = self._read()
        self.model_id = str(ready["model"]) + (" (random weights)" if ready.get("random_weights") else "")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the LAVIS worker exited (code {code}) before answering; see its stderr")
        return dict(json.loads(line))

    def caption(self, images: list[bytes]) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"images": [base64.b64encode(b).decode() for b in images]}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"LAVIS worker: {reply['error']}")
        return [str(c) for c in reply["captions"]]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self._tmp.cleanup()

    def __del__(self) -> None:
        self.close()


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
