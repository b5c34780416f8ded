"""Cluster size: one key's close with 3, 10 and 30 node processes, of which 3 hold the key.

    .venv/bin/python -m bench.cluster_size [--sizes 3,10,30] [--iterations 100]
        [--brokers redis,nats] [--heartbeat 2.0] [--json bench/results/cluster_size.json]
        [--doc docs/benchmarks.md]

For each broker and size ``N``: ``N`` node processes (``tests/cluster/node.py``, aiohttp,
heartbeat ``--heartbeat`` seconds, the library's default 2 s unless told), one socket of
a new session on each of nodes 1-3 per round, ``close_all`` from node 1 (the clients and
the round of ``bench.peers``). Measured:

* the close's p50 / p99 (call → the last of the three clients sees its CLOSE);
* the CPU of the *uninvolved* nodes (4..N, from ``/proc``) during the close rounds (at
  least three heartbeats long) against the same nodes idle for as long, just after: a close
  must cost nodes that do not hold the key nothing (only nodes holding a key subscribe its
  channel);
* the idle CPU per node (ms of CPU per second), which grows with ``N`` only through
  membership: every node hears every heartbeat.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench._bench_nodes import BenchNode
from bench._loops import run
from bench._peer_rounds import Clients, System, close_round
from bench._results import add_result_options, replace_doc_block, report, run_facts, stored_results
from bench.cluster import broker, summary
from bench.connect_storm import cpu_seconds
from tests.cluster._nodes import get_json, start_nodes, stop_nodes

DOC_START = "<!-- bench.cluster_size: generated, do not edit by hand -->"
DOC_END = "<!-- /bench.cluster_size -->"
WARM_UP = 5


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def measure(system: System, others: list[int], iterations: int, least_seconds: float) -> dict[str, Any]:
    """``iterations`` closes (more until ``least_seconds`` have passed: the window must span
    several heartbeats), and the CPU the uninvolved nodes spent meanwhile."""
    clients = await Clients.start_peers()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            for _ in range(WARM_UP):
                await close_round(http, clients, system, 1)
            started, cpu_started = time.monotonic(), cpu_of(others)
            rounds: list[dict[str, float]] = []
            while len(rounds) < iterations or time.monotonic() - started < least_seconds:
                rounds.append(await close_round(http, clients, system, 1))
            busy_seconds, busy_cpu = time.monotonic() - started, cpu_of(others) - cpu_started
    finally:
        await clients.close()
    result: dict[str, Any] = {"close": summary([one["last"] for one in rounds]), "closes": len(rounds)}
    if others:
        result["uninvolved_nodes"] = len(others)
        result["uninvolved_cpu_ms_per_s_per_node_during_closes"] = busy_cpu * 1e3 / busy_seconds / len(others)
        result["window_seconds"] = busy_seconds
    return result


def idle_cpu_per_node(pids: list[int], seconds: float) -> float:
    """ms of CPU per second per node, all of them idle."""
    before = cpu_of(pids)
    time.sleep(seconds)
    return (cpu_of(pids) - before) * 1e3 / seconds / len(pids)


def run_size(kind: str, url: str, size: int, options: argparse.Namespace, directory: Path) -> dict[str, Any]:
    namespace = f"size-{kind}-{size}"
    nodes = [
        BenchNode(f"{namespace}-{index + 1}", url, directory, namespace, options.loop)
        for index in range(size)
    ]
    for node in nodes:
        node.extra += ["--heartbeat", str(options.heartbeat)]
    try:
        start_nodes(nodes, timeout=60 + size * 2)
        pids = [int(get_json(f"{node.url}/health")[1]["pid"]) for node in nodes]
        time.sleep(max(2.0, 2 * options.heartbeat))  # every node has heard every other
        system = System(f"{kind}-{size}", "sessionws", kind, options.loop, [node.url for node in nodes[:3]])
        least_seconds = 3 * options.heartbeat
        idle = idle_cpu_per_node(pids, max(options.idle_seconds, least_seconds))
        result = run(measure(system, pids[3:], options.iterations, least_seconds))
        result["idle_cpu_ms_per_s_per_node"] = idle
        if size > 3:
            # The same nodes idle, measured again over a window as long as the closes took.
            idle_others = idle_cpu_per_node(pids[3:], result["window_seconds"])
            result["uninvolved_cpu_ms_per_s_per_node_idle"] = idle_others
            result["uninvolved_cpu_ratio_closes_to_idle"] = result[
                "uninvolved_cpu_ms_per_s_per_node_during_closes"
            ] / max(idle_others, 1e-9)
        live = get_json(f"{nodes[0].url}/health")[1]["live_nodes"]  # the others
        result["live_nodes_seen_by_node1"] = len(live)
        return result
    finally:
        stop_nodes(nodes)


def table(results: dict[str, Any]) -> str:
    rows = [
        "| broker | nodes | close p50 ms | p99 ms | "
        "CPU of uninvolved nodes, closing / idle | idle CPU / node |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, sizes in results["brokers"].items():
        for size, measured in sizes.items():
            close = measured["close"]
            ratio = measured.get("uninvolved_cpu_ratio_closes_to_idle")
            uninvolved = "(none)"
            if ratio is not None:
                busy = measured["uninvolved_cpu_ms_per_s_per_node_during_closes"]
                idle = measured["uninvolved_cpu_ms_per_s_per_node_idle"]
                uninvolved = f"{busy:.2f} / {idle:.2f} ms/s = {ratio:.2f}x"
            rows.append(
                f"| {kind} | {size} | {close['p50_ms']:.2f} | {close['p99_ms']:.2f} | {uninvolved} | "
                f"{measured['idle_cpu_ms_per_s_per_node']:.2f} ms/s |"
            )
    return "\n".join(rows)


def write_doc(path: Path, results: dict[str, Any]) -> None:
    meta = results["run"]
    block = (
        f"{DOC_START}\nRun {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, load average "
        f"{meta['load_average_at_end'][0]:.1f} at the end), heartbeat {meta['heartbeat']} s, "
        f"{meta['iterations']} closes per size.\n\n{table(results)}\n{DOC_END}"
    )
    replace_doc_block(path, DOC_START, DOC_END, block)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="3,10,30")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--brokers", default="redis,nats")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="seconds (the library's default)")
    parser.add_argument("--idle-seconds", type=float, default=6.0, help="how long idle CPU is measured")
    parser.add_argument("--loop", default="auto", help="the nodes' event loop: auto, asyncio or uvloop")
    add_result_options(parser, "bench/results/cluster_size.json")
    options = parser.parse_args()
    if stored_results(options, table, write_doc):
        return
    results: dict[str, Any] = {"brokers": {}}
    with tempfile.TemporaryDirectory(prefix="sessionws-size-") as directory:
        for kind in options.brokers.split(","):
            results["brokers"][kind] = {}
            with broker(kind) as url:
                for size in (int(value) for value in options.sizes.split(",")):
                    print(f"== {kind}, {size} nodes", flush=True)
                    results["brokers"][kind][str(size)] = run_size(kind, url, size, options, Path(directory))
    results["run"] = run_facts(heartbeat=options.heartbeat, iterations=options.iterations, loop=options.loop)
    report(options, results, table, write_doc)


if __name__ == "__main__":
    main()
