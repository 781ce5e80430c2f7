"""Vendor client frameworks run in their own environments (``.ref/<name>``), as child processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


async def run_reference_client(env: str, runner: str, args: list[str], out: Path, timeout_s: float = 180) -> Any:
    """``.ref/<env>/bin/python tests/reference/<runner> ARGS`` (the runner writes JSON to ``out``),
    without blocking the loop the server under test runs on; returns that JSON."""
    python = ROOT / ".ref" / env / "bin" / "python"
    assert python.exists(), f"run scripts/setup.sh test (it installs {env} into .ref/{env})"
    proc = await asyncio.create_subprocess_exec(
        str(python), str(ROOT / "tests" / "reference" / runner), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    return json.loads(out.read_text())
