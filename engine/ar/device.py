"""Which torch device a voice may be placed on, checked when its ``voice.json`` is read.

A device this machine cannot use is a clear load error, not a failure in a
listener's first step.
"""

from __future__ import annotations

import torch


def check_device(device: str) -> None:
    """Raise ``ValueError`` unless ``device`` is ``cpu`` or a CUDA device this machine has."""
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device") from None
    if place.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only cpu and cuda devices are supported")
    if place.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        if place.index is not None and place.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
