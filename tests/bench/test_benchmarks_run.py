"""The benchmarks still run: each at a tiny size, its JSON checked for sane figures.

Nothing here is timed (speed lives in the benchmarks' own reports, beside floors measured
in the same run); these tests only keep ``bench/`` from rotting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.bench._run import ROOT, run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_register_benchmark(tmp_path: Path) -> None:
    result = run_bench("bench.register", tmp_path / "register.json", "--n", "2000", "--repeats", "2")
    assert 0 < result["floor_us"] < result["local_us"]
    assert result["ratio"] > 1 and result["ratio_median_of_pairs"] > 1


def test_memory_benchmark(tmp_path: Path) -> None:
    result = run_bench("bench.memory", tmp_path / "memory.json", "--n", "2000")
    for shape in ("a", "b"):
        measured = result["shapes"][shape]
        assert measured["sessionws"]["sockets_after_unregister"] == 0
        assert measured["sessionws"]["bytes_per_connection"] > measured["floor"]["bytes_per_connection"] > 0


def test_revoke_storm_benchmark(tmp_path: Path) -> None:
    result = run_bench(
        "bench.revoke_storm", tmp_path / "storm.json", "--sessions", "200", "--in-flight", "1,10", "--redis"
    )
    for broker in ("memory", "redis"):
        for in_flight in ("1", "10"):
            measured = result["brokers"][broker][in_flight]
            assert measured["revoke"]["sockets_left"] == 0
            assert measured["revoke"]["codes"] == [4401]
            assert measured["floor"]["total_s"] > 0 and measured["revoke"]["total_s"] > 0


def test_cluster_benchmark(tmp_path: Path) -> None:
    result = run_bench(
        "bench.cluster",
        tmp_path / "cluster.json",
        "--brokers",
        "redis,nats",
        "--iterations",
        "3",
        "--sockets",
        "1,2",
        "--register",
        "200",
    )
    for kind in ("redis", "nats"):
        measured = result["brokers"][kind]
        assert measured["floor"]["sum"]["p50_ms"] > 0
        assert set(measured["close_all"]) == {"1", "2"}
        assert measured["close_all"]["1"]["p50_ms"] > 0


def test_the_chart_draws_every_result_as_valid_svg(tmp_path: Path) -> None:
    chart = tmp_path / "chart.svg"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.plot", "--out", str(chart)], cwd=ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    root = ElementTree.parse(chart).getroot()
    labels = [text.text or "" for text in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any("register + unregister" in label for label in labels)
    assert any("redis: close_all p50, 1 socket/node" in label for label in labels)


def test_metrics_benchmark(tmp_path: Path) -> None:
    result = run_bench(
        "bench.metrics", tmp_path / "metrics.json", "--sockets", "300", "--n", "2000", "--repeats", "2"
    )
    assert result["stats_ms"] > 0 and result["prometheus_scrape_ms"] > 0
    assert result["opentelemetry_collect_ms"] > 0 and result["prometheus_scrape_bytes"] > 0
    assert result["register_us"] > 0 and result["register_with_events_us"] > 0
