"""Load a module as it was at an earlier commit, beside the installed package (for the A/B scripts).

Run from ``scripts/`` (a script there has this folder on ``sys.path``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder on ``sys.path`` for :func:`module_at`'s copies (and the A/B's files)."""
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        try:
            yield Path(tmp)
        finally:
            sys.path.remove(tmp)


def module_at(rev: str, relpath: str, folder: Path) -> ModuleType:
    """``REV``'s copy of the module at ``relpath``, loaded beside the installed package: each
    ``from streamvox.… import`` in it is pointed at ``REV``'s copy of that module (loaded the
    same way), so nothing of the working tree leaks into the "before" side.  Loaded once per
    ``rev`` and path."""
    name = f"before_{rev}_" + relpath.removesuffix(".py").replace("/", "_")
    if name in sys.modules:
        return sys.modules[name]
    text = _show(rev, relpath)
    for package, member, alias in re.findall(
        r"^from streamvox\.([\w.]+) import (\w+)(?: as (\w+))?$", text, flags=re.M
    ):
        submodule = package.replace(".", "/") + f"/{member}.py"
        if _exists(rev, submodule):  # ``from streamvox.package import module [as alias]``
            dependency = module_at(rev, submodule, folder)
            line = rf"^from streamvox\.{re.escape(package)} import {member}(?: as {alias})?$"
            text = re.sub(line, f"import {dependency.__name__} as {alias or member}", text, flags=re.M)
    for dotted in sorted(set(re.findall(r"^from streamvox\.([\w.]+) import", text, flags=re.M))):
        dependency = module_at(rev, dotted.replace(".", "/") + ".py", folder)
        pattern = rf"^from streamvox\.{re.escape(dotted)} import"
        text = re.sub(pattern, f"from {dependency.__name__} import", text, flags=re.M)
    if re.search(r"^\s*(import|from) streamvox\b", text, flags=re.M):
        raise SystemExit(f"{rev}:{relpath} imports streamvox in a way this script cannot redirect")
    path = folder / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def extension_at(rev: str, relpath: str, name: str, folder: Path) -> ModuleType:
    """``REV``'s copy of the C extension source at ``relpath``, compiled into ``folder`` with the
    flags ``pyproject.toml`` gives the kernels (``gcc -O3 -fopenmp``) and loaded as a module whose
    init function is ``PyInit_<name>`` (the installed build's name, e.g. ``_cpu_linear``)."""
    source = folder / f"{name}_{rev}.c"
    source.write_text(_show(rev, relpath))
    target = folder / f"{name}_{rev}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    include = sysconfig.get_paths()["include"]
    command = ["gcc", "-O3", "-fopenmp", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)]
    subprocess.run(command, check=True)
    loader = importlib.machinery.ExtensionFileLoader(name, str(target))
    spec = importlib.util.spec_from_file_location(name, target, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@contextmanager
def kernel_swapped(owner: ModuleType, kernel: ModuleType) -> Iterator[None]:
    """``owner._kernel`` (a wrapper module's extension) is ``kernel`` inside the block."""
    saved = owner._kernel
    owner._kernel = kernel
    try:
        yield
    finally:
        owner._kernel = saved


def interleaved_ms(
    sides: dict[str, Callable[[], object]], repeats: int, passes: int, warm: int = 1
) -> dict[str, float]:
    """Median ms per call of each side's ``run``: the sides take turns ``repeats`` times, each turn
    ``warm`` untimed calls and ``passes`` timed ones, so drift on a shared machine hits all alike."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            for _ in range(warm):
                run()
            for _ in range(passes):
                started = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in seconds.items()}


def _show(rev: str, relpath: str) -> str:
    return subprocess.run(
        ["git", "show", f"{rev}:{relpath}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def _exists(rev: str, relpath: str) -> bool:
    found = subprocess.run(["git", "cat-file", "-e", f"{rev}:{relpath}"], cwd=ROOT, capture_output=True)
    return found.returncode == 0
