"""The browser demo and its small JavaScript client, served by the server at ``/``."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def static_dir() -> Path:
    """Folder holding ``index.html`` and the client modules (a real folder: the package is not zipped)."""
    return Path(str(files("streamvox.web_demo").joinpath("static")))
