"""Let torchvision import beside the CPU torch wheel (see ENVIRONMENT.md, section 1c).

PyPI's torchvision Linux wheel is a CUDA build; next to torch's CPU wheel its C++ ops fail to
load, and `torchvision._meta_registrations` then fails on the missing `torchvision::nms` schema.
Defining the two schemas (only when the ops did not load) lets torchvision, open_clip, timm and
transformers' image processors import. `torchvision.ops.nms` itself stays unavailable; the
pipeline uses PIL for images. Call `install()` before anything imports torchvision.

It lives in `storage/` because that is the one package every other package may import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_done = False


def install() -> None:
    global _done
    if _done:
        return
    _done = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    import torch

    libs = list(Path(spec.origin).parent.glob("_C*.so"))
    try:
        if not libs:
            raise OSError("torchvision has no _C library")
        torch.ops.load_library(str(libs[0]))
        return
    except (OSError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _libs.append(lib)  # the schemas live as long as the Library object


_libs: list[object] = []
