"""Reading torch pickles without running code from them.

A checkpoint a user downloaded is a pickle, and a pickle can name any Python
callable; it must not be able to run code here.  Files are read with torch's
restricted unpickler (``weights_only=True``: tensors, plain containers,
numbers and strings); anything else is refused with :class:`CheckpointError`.
Shared by every family whose weights come as ``.pth``/``.ckpt`` files.
Pure functions: thread-safe.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, or holds objects we refuse to unpickle."""


def restricted_load(data: bytes, path: Path) -> Any:
    """Unpickle a torch file's bytes allowing only tensors and plain data (``path`` names it in errors)."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle (only tensors, plain containers, numbers and strings are allowed): {exc}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
