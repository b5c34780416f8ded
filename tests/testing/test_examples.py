"""The README's "Testing your app" examples run under pytest-asyncio, and the README shows
them as they are in ``examples/testing`` (so neither can rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sessionws.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "testing"
README = (ROOT / "README.md").read_text()

pytest.importorskip("pytest_asyncio", reason="the dev extra installs pytest-asyncio")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def test_the_examples_pass_under_pytest_asyncio() -> None:
    """As a user's project runs them: their own pytest.ini, pytest-asyncio, and anyio's
    plugin disabled (so nothing but pytest-asyncio can be running the async tests)."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(EXAMPLES / "pytest.ini"), str(EXAMPLES), "-p", "no:anyio"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert re.search(r"\b7 passed\b", output), output
    assert "asyncio: mode=" in output, output  # pytest-asyncio's header line


def test_the_readmes_testing_examples_are_the_files() -> None:
    blocks = re.findall(r"```python\n(.*?)```", section("Testing your app"), flags=re.DOTALL)
    assert len(blocks) == 3
    sources = "\n".join(path.read_text() for path in sorted(EXAMPLES.glob("test_*.py")))
    for block in blocks:
        assert block in sources, f"the README shows code that is not in examples/testing:\n{block}"


def test_the_readmes_metrics_table_names_every_metric() -> None:
    text = section("Metrics")
    for spec in METRICS:
        suffix = "_total" if spec.kind == "counter" else ""
        assert f"`{spec.prometheus}{suffix}`" in text
        assert f"`{spec.opentelemetry}`" in text
