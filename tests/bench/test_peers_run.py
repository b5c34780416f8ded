"""``bench.peers`` still runs: each system, floor and option at a tiny size.

Nothing here is timed; the figures only have to be there and be positive. Skipped, with
the reason, where Node.js or the pinned npm packages cannot be had (the benchmark
installs them itself with ``npm ci`` on first use).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench._profile import ATTACH_FAILED
from bench._socketio import PeerUnavailableError, ensure_installed
from tests.bench._run import ROOT, run_bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def run_peers(result: Path, *arguments: str) -> Any:
    return run_bench("bench.peers", result, *arguments)


@pytest.fixture(scope="module")
def socketio_installed() -> None:
    try:
        ensure_installed()
    except PeerUnavailableError as error:
        pytest.skip(f"Socket.IO cannot be installed here: {error}")


@pytest.mark.usefixtures("socketio_installed")
def test_every_system_closes_every_socket_of_a_session(tmp_path: Path) -> None:
    loops = "asyncio,uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    result = run_peers(
        tmp_path / "peers.json",
        "--iterations", "3", "--iterations-50", "2", "--sockets", "1,2",
        "--loops", loops, "--local-first", "--trace",
    )  # fmt: skip
    systems = result["systems"]
    expected = {"sessionws-redis", "sessionws-redis-local-first", "sessionws-nats", "socketio-redis"}
    if "uvloop" in loops:
        expected |= {"sessionws-redis-uvloop", "sessionws-nats-uvloop"}
    assert expected <= set(systems)
    for name, system in systems.items():
        assert set(system["sockets"]) == {"1", "2"}, name
        for measured in system["sockets"].values():
            assert measured["last"]["n"] in (2, 3)
            assert measured["last"]["p50_ms"] >= measured["node1"]["p50_ms"] > 0
    traced = systems["sessionws-redis"]["sockets"]["1"]
    assert "trace: node 1 close_all" in traced and "trace: node 2 command_received" in traced
    for floor in ("redis_publish", "nats_publish", "websocket_close", "raw_closes_2"):
        assert result["floors"][floor]["p50_ms"] > 0
    assert result["ratios"]["sessionws-redis"]["1"]["p50_to_socketio_p50"] > 0
    rendered = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--from-json", str(tmp_path / "peers.json")],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "socketio-redis" in rendered


@pytest.mark.skipif(
    shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists(),
    reason="py-spy is not installed (pip install py-spy; it comes with the dev extra)",
)
def test_the_profile_of_node_one_finds_the_close_path(tmp_path: Path) -> None:
    arguments = ["--iterations", "40", "--sockets", "1", "--brokers", "redis", "--loops", "asyncio"]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--json", str(tmp_path / "peers.json"), *arguments,
         "--no-socketio", "--profile"],
        cwd=ROOT, capture_output=True, text=True, timeout=360, check=False,
    )  # fmt: skip
    if completed.returncode != 0 and ATTACH_FAILED in completed.stderr:
        pytest.skip(f"py-spy may not read other processes here: {completed.stderr.strip()[-300:]}")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    profile = json.loads((tmp_path / "peers.json").read_text())["profile"]
    assert profile["system"] == "sessionws-redis"
    assert profile["samples"] > 0
    assert (tmp_path / "profile-sessionws-redis-node1.txt").exists()
    assert set(profile["paths"]) == {
        "close call (close_all)",
        "received command (message_received)",
        "delivery worker (_drain)",
    }


def test_an_experiment_tree_runs_beside_the_current_code(tmp_path: Path) -> None:
    """``--experiment`` with this very tree: a second cluster per broker, measured too."""
    result = run_peers(
        tmp_path / "peers.json",
        "--iterations", "2", "--sockets", "1", "--brokers", "redis", "--loops", "asyncio",
        "--no-socketio", "--experiment", str(ROOT),
    )  # fmt: skip
    assert set(result["systems"]) == {"sessionws-redis", "sessionws-redis-experiment"}
    assert result["systems"]["sessionws-redis-experiment"]["sockets"]["1"]["last"]["p50_ms"] > 0
