"""``bench.connect_storm`` and ``bench.cluster_size`` still run, at a tiny size.

Nothing here is timed: the figures only have to be there, positive, and every socket of
a storm must have been served (a storm that lost sockets would hang and fail here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench._run import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_connect_storm_benchmark(tmp_path: Path) -> None:
    result = run_bench(
        "bench.connect_storm",
        tmp_path / "storm.json",
        "--sockets",
        "60",
        "--in-flight",
        "20",
        "--repeats",
        "1",
    )
    for kind in ("redis", "nats"):
        variants = result["brokers"][kind]
        assert set(variants) == {"bare", "new sessions", "bare, tabs' cookies", "second tabs"}
        for measured in variants.values():
            assert measured["per_second"][0] > 0
            assert measured["ratio_to_bare_median"] > 0
        assert variants["bare"]["ratio_to_bare_median"] == 1


def test_cluster_size_benchmark(tmp_path: Path) -> None:
    result = run_bench(
        "bench.cluster_size", tmp_path / "size.json",
        "--sizes", "3,4", "--iterations", "3", "--heartbeat", "0.5", "--idle-seconds", "0.5",
    )  # fmt: skip
    for kind in ("redis", "nats"):
        sizes = result["brokers"][kind]
        assert set(sizes) == {"3", "4"}
        assert sizes["3"]["close"]["p50_ms"] > 0 and sizes["4"]["close"]["p50_ms"] > 0
        assert sizes["4"]["uninvolved_nodes"] == 1
        assert sizes["4"]["live_nodes_seen_by_node1"] == 3  # the other nodes
        assert sizes["4"]["idle_cpu_ms_per_s_per_node"] > 0
