"""Packaging guards (DESIGN §2): the folder tree matches `packages`, assets load as resources."""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"stream_server", "engine", "codecs", "web_demo", "bench", "deploy"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_python_folder_is_a_listed_package() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    package_dir = tool["package-dir"]
    listed = set(tool["packages"])
    found = set()
    for top in FOLDERS:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join(["streamvox", top, *rel.parts]))
        assert package_dir[f"streamvox.{top}"] == top
    for folder in FOLDERS:
        for py in (ROOT / folder).rglob("*.py"):
            assert (py.parent / "__init__.py").exists(), f"{py} is in a folder without __init__.py"
    assert listed == found


def test_no_parent_package_folder() -> None:
    assert not (ROOT / "streamvox").exists()
    assert not (ROOT / "__init__.py").exists()


def test_version_comes_from_metadata() -> None:
    from streamvox.stream_server.app import package_version

    assert package_version() == version("streamvox") == _pyproject()["project"]["version"]


def test_web_demo_assets_load_as_resources() -> None:
    page = resources.files("streamvox.web_demo").joinpath("static/index.html").read_text()
    assert "streamvox" in page


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"]["streamvox"] == "streamvox.stream_server.cli:main"
