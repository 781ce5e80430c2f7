"""Loading GPT-SoVITS checkpoint files without running code from them.

Both files are torch pickles, and a pickle can name any Python callable; a
voice downloaded from the internet must not be able to run code here.  They
are read with torch's restricted unpickler (``weights_only=True``: tensors,
plain containers, numbers and strings); anything else is refused with
:class:`CheckpointError`.

* s1 (GPT, ``.ckpt``): ``{"weight": {"model.<name>": tensor}, "config": {...}}``.
* s2 (SoVITS, ``.pth``): ``{"weight": {...} (fp16, ``enc_q`` removed), "config": {...}, "info": ...}``,
  written as a zip whose first two bytes ``PK`` were overwritten with a version tag
  (``03`` to ``06``); they are restored in memory before reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from streamvox.engine.ar.checkpoint import CheckpointError, read_bytes, restricted_load

S2_VERSION_TAGS = (b"03", b"04", b"05", b"06")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's tensors (prefix stripped) and its config dict."""

    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    version_tag: str | None = None
    """The s2 header tag (``"03"``..``"06"``) or ``None`` for a plain zip/pickle."""


def _tensors(raw: Any, path: Path, prefix: str) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: 'weight' is not a mapping of tensors")
    weights: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: weight entry {name!r} is not a named tensor")
        weights[name.removeprefix(prefix)] = value
    return weights


def _config(raw: Any, path: Path) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: 'config' is missing or not a mapping")
    return dict(raw)


def load_s1(path: str | Path) -> Checkpoint:
    """A GPT (text-to-semantic) checkpoint; weights lose their ``model.`` prefix."""
    file = Path(path)
    raw = restricted_load(read_bytes(file), file)
    if not isinstance(raw, Mapping) or "weight" not in raw:
        raise CheckpointError(f"{file}: not a GPT-SoVITS s1 checkpoint (no 'weight')")
    return Checkpoint(_tensors(raw["weight"], file, "model."), _config(raw.get("config"), file))


def load_s2(path: str | Path) -> Checkpoint:
    """A SoVITS checkpoint, with its version-tagged header restored to ``PK``."""
    file = Path(path)
    data = read_bytes(file)
    tag = data[:2] if data[:2] in S2_VERSION_TAGS else None
    if tag is not None:
        data = b"PK" + data[2:]
    raw = restricted_load(data, file)
    if not isinstance(raw, Mapping) or "weight" not in raw:
        raise CheckpointError(f"{file}: not a GPT-SoVITS s2 checkpoint (no 'weight')")
    return Checkpoint(
        _tensors(raw["weight"], file, ""),
        _config(raw.get("config"), file),
        tag.decode() if tag is not None else None,
    )
