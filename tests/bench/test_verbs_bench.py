"""bench.verbs still runs at a tiny size and reports what each verb costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench._run import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_verbs_benchmark(tmp_path: Path) -> None:
    result = run_bench("bench.verbs", tmp_path / "verbs.json", "--repeats", "5")
    verbs = result["verbs"]
    assert result["floor_ms"] > 0
    assert verbs["set_data"]["redis_commands"] == 0
    assert verbs["send_to"]["redis_commands"] >= 2
    assert all(row["p50_ms"] > 0 for row in verbs.values())
