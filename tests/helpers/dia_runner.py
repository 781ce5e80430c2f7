"""Runs one ``tests/reference/dia_reference.py`` job in a child process with transformers on its path.

transformers (pinned, ``models/dia`` and ``models/dac``) is installed by ``scripts/setup.sh test``
into ``.ref/transformers``; it never enters the test process or the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".ref" / "transformers"
HELPER = ROOT / "tests" / "reference" / "dia_reference.py"


def dia_reference(job: dict[str, Any], tmp_path: Path) -> dict[str, torch.Tensor]:
    """Run ``job`` (its ``op`` and inputs) in the reference and return the tensors it wrote."""
    if not (REFERENCE / "transformers" / "models" / "dia").is_dir():
        pytest.fail(f"transformers is not installed in {REFERENCE}: run bash scripts/setup.sh test")
    name = f"{job['op']}-{len(list(tmp_path.glob('dia-job-*')))}"
    job_file = tmp_path / f"dia-job-{name}.pt"
    job = {**job, "output": str(tmp_path / f"dia-out-{name}.pt")}
    torch.save(job, job_file)
    env = dict(os.environ, PYTHONPATH=str(REFERENCE), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run(
        [sys.executable, str(HELPER), str(job_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(job["output"], weights_only=True)
