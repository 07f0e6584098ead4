"""Which torch device the settings ask for, failing at start when this machine has none."""

from __future__ import annotations

import torch

from surd.settings import SettingsError


class DeviceUnavailable(SettingsError):
    """The settings ask for a device this machine does not have."""


def device_for(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device=cuda but no CUDA GPU is visible; set SURD_DEVICE=cpu or auto")
    return torch.device(name)
