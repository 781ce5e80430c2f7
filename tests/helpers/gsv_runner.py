"""Runs one ``tests/reference/gsv_reference.py`` job in a child process with the GPT-SoVITS reference on its path.

The reference (``gpt-sovits-cpufast``) is installed by ``scripts/setup.sh test`` into
``.ref/gpt-sovits``; its top-level modules never enter the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".ref" / "gpt-sovits"
HELPER = ROOT / "tests" / "reference" / "gsv_reference.py"


def reference(job: dict[str, Any], tmp_path: Path) -> dict[str, np.ndarray]:
    """Run ``job`` (its ``op`` and inputs) in the reference and return the arrays it wrote."""
    if not (REFERENCE / "GPT_SoVITS" / "AR").is_dir():
        pytest.fail(f"the GPT-SoVITS reference is not installed in {REFERENCE}: run bash scripts/setup.sh test")
    job_file = tmp_path / f"job-{job['op']}.json"
    job["output"] = str(tmp_path / f"out-{job['op']}.npz")
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=f"{REFERENCE / 'GPT_SoVITS'}{os.pathsep}{REFERENCE}")
    done = subprocess.run(
        [sys.executable, str(HELPER), str(job_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(job["output"]) as data:
        return {k: data[k] for k in data.files}
