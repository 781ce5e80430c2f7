"""DESIGN §2's direction of imports, checked by parsing every module's imports with ``ast``.

dialects -> contexts / engine_client -> engine.api; engine.core -> engine.api / scheduler only; a
backend imports engine.api, ar/, audio/, text/ and never another backend; codecs import nothing of
ours; benchmarks and tests are never imported by the package; only the deployment imports Ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("engine", "stream_server", "codecs", "web_demo", "bench", "deploy")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["streamvox", *parts])


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth: lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): _imports(p) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}


def _ours(imports: set[str]) -> set[str]:
    return {name for name in imports if name.startswith("streamvox.") or name.split(".")[0] == "tests"}


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(module_prefix: str, allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for module, imports in MODULES.items():
        if module == module_prefix or module.startswith(module_prefix + "."):
            bad.extend(f"{module} imports {name}" for name in _ours(imports) if not _allowed(name, allowed))
    return bad


def test_the_modules_were_found() -> None:
    assert "streamvox.engine.core" in MODULES and "streamvox.stream_server.contexts" in MODULES
    assert any(m.startswith("streamvox.engine.backends.gpt_sovits.") for m in MODULES)


def test_the_engine_core_names_no_model() -> None:
    core_may_import = ("streamvox.engine.api", "streamvox.engine.scheduler", "streamvox.engine.events",
                       "streamvox.engine.memory", "streamvox.engine.unit_trace")  # fmt: skip
    assert _violations("streamvox.engine.core", core_may_import) == []
    assert _violations("streamvox.engine.scheduler", ("streamvox.engine.api", "streamvox.engine.events")) == []
    assert _violations("streamvox.engine.unit_trace", ()) == []
    source = (ROOT / "engine" / "core.py").read_text(encoding="utf-8")
    for word in ("piper", "gpt_sovits", "gpt-sovits", 'kind == "'):
        assert word not in source.lower(), word


def test_backends_use_only_the_seam_and_the_shared_pieces() -> None:
    shared = ("streamvox.engine.api", "streamvox.engine.events", "streamvox.engine.ar", "streamvox.engine.audio",
              "streamvox.engine.text")  # fmt: skip
    backends = sorted(p.name for p in (ROOT / "engine" / "backends").iterdir() if (p / "__init__.py").exists())
    assert {"piper", "gpt_sovits"} <= set(backends)
    for backend in backends:
        own = f"streamvox.engine.backends.{backend}"
        assert _violations(own, (*shared, own)) == []


def test_shared_engine_pieces_know_no_backend_and_no_server() -> None:
    for folder in ("ar", "audio", "text"):
        allowed = ("streamvox.engine.api", "streamvox.engine.events", "streamvox.engine.ar", "streamvox.engine.audio",
                   "streamvox.engine.text")  # fmt: skip
        assert _violations(f"streamvox.engine.{folder}", allowed) == []
    assert _violations("streamvox.engine.api", ("streamvox.engine.events",)) == []


def test_the_engine_never_imports_the_server_or_the_benchmarks() -> None:
    assert _violations("streamvox.engine", ("streamvox.engine",)) == []


def test_only_the_deployment_knows_ray() -> None:
    """Ray is an optional extra: the server, the engine and the benchmarks never import it, and the
    deployment reaches the server only through its ASGI app, its config and voice specs."""
    for module, imports in MODULES.items():
        if not module.startswith("streamvox.deploy"):
            assert not any(name == "ray" or name.startswith("ray.") for name in imports), module
    allowed = ("streamvox.deploy", "streamvox.stream_server.asgi", "streamvox.stream_server.config",
               "streamvox.engine.registry")  # fmt: skip  # VoiceSpec names a voice to load
    assert any(m.startswith("streamvox.deploy.") for m in MODULES)
    assert _violations("streamvox.deploy", allowed) == []


def test_codecs_import_nothing_of_ours() -> None:
    assert _violations("streamvox.codecs", ("streamvox.codecs",)) == []


def test_dialects_reach_the_engine_only_through_its_seam() -> None:
    allowed = (
        "streamvox.codecs",
        "streamvox.engine.api",
        "streamvox.engine.events",
        "streamvox.engine.registry",
        "streamvox.engine.text.segmenter",
        "streamvox.stream_server.auth",
        "streamvox.stream_server.config",
        "streamvox.stream_server.contexts",
        "streamvox.stream_server.conversation",
        "streamvox.stream_server.corking",
        "streamvox.stream_server.engine_client",
        "streamvox.stream_server.http_speech",
        "streamvox.stream_server.idle",
        "streamvox.stream_server.metrics",
        "streamvox.stream_server.quotas",
        "streamvox.stream_server.runtime",
        "streamvox.stream_server.routes",
        "streamvox.stream_server.tokens",
        "streamvox.stream_server.text_checks",
        "streamvox.stream_server.timeline",
        "streamvox.stream_server.transport",
        "streamvox.stream_server.voice_names",
        "streamvox.stream_server.dialects",
    )
    assert _violations("streamvox.stream_server.dialects", allowed) == []


def test_contexts_know_no_web_framework_and_no_dialect() -> None:
    imports = MODULES["streamvox.stream_server.contexts"]
    assert not {n for n in imports if n.split(".")[0] in ("aiohttp", "websockets", "starlette", "fastapi")}
    assert not {n for n in imports if n.startswith("streamvox.stream_server.dialects")}
    assert not {n for n in imports if _allowed(n, ("streamvox.engine.core", "streamvox.engine.backends"))}


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_server_never_imports_benchmarks_or_tests() -> None:
    """Only ``streamvox bench`` reaches the benchmarks, and only when it runs (a lazy import in the CLI)."""
    cli = "streamvox.stream_server.cli"
    for prefix in ("streamvox.stream_server", "streamvox.engine", "streamvox.codecs", "streamvox.web_demo"):
        for module, imports in MODULES.items():
            if module.startswith(prefix):
                banned = ("tests",) if module == cli else ("streamvox.bench", "tests")
                assert not {n for n in _ours(imports) if _allowed(n, banned)}, module
    top = _top_level_imports(ROOT / "stream_server" / "cli.py")
    assert not {n for n in top if _allowed(n, ("streamvox.bench",))}


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """A module that breaks a rule is reported (the rules above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from streamvox.engine.backends.piper.voice import PiperVoice\n")
    assert "streamvox.engine.backends.piper.voice" in _imports(bad)
    MODULES["streamvox.engine.core_probe"] = _imports(bad)
    try:
        assert _violations("streamvox.engine.core_probe", ("streamvox.engine.api",))
    finally:
        del MODULES["streamvox.engine.core_probe"]


@pytest.mark.parametrize(
    "module",
    ["streamvox.stream_server.app", "streamvox.engine.registry", "streamvox.stream_server.cli"],
)
def test_a_piper_only_server_never_imports_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "from streamvox.engine.registry import VoiceRegistry\n"
        "VoiceRegistry.load(warm_up=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
