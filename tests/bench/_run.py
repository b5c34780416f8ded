"""Runs a benchmark module as its users do (``python -m bench.X --json FILE``) and reads its
results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, result: Path, *arguments: str, timeout: float = 360) -> Any:
    """Run ``module`` at the root of the checkout, writing its JSON to ``result``; the test
    fails with the benchmark's output if it exits with an error."""
    completed = subprocess.run(
        [sys.executable, "-m", module, "--json", str(result), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(result.read_text())
