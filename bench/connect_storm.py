"""Connect storms: websocket upgrades per second on one node, with sessionws and without.

    .venv/bin/python -m bench.connect_storm [--sockets 3000] [--in-flight 200] [--repeats 3]
        [--loop auto] [--json bench/results/connect_storm.json] [--doc docs/benchmarks.md]

One node process per broker (``tests/cluster/node.py``, aiohttp with aiohttp-session,
pinned to one core; Redis and NATS on loopback) and one client process (aiohttp, pinned
to the other core) that opens ``--sockets`` websockets, ``--in-flight`` upgrades at a
time, each counted when the server's first message has arrived, and keeps them open
until the storm is over. Per node, in turns (the order rotates each repeat):

* **bare**: ``/bench/bare-ws``, the same app and the same hello without sessionws (the
  session loaded by aiohttp-session's middleware, nothing registered): the floor, without
  a cookie and with the cookies of the second tabs below;
* **new sessions**: ``/ws`` without a cookie: ``session_ws`` mints an id and registers
  the socket under a key no node holds (subscribe, sequence, markers: a node restart
  whose clients all reconnect, or a first visit);
* **second tabs**: ``/ws`` with the cookies of 100 sessions logged in before (keys the
  node holds after the first socket of each: the registry's local path).

Rates are upgrades per second of wall time; CPU is the node's own (user + system, from
``/proc``) per upgrade, which a shared machine disturbs less than the rate. Ratios are to
the bare storm of the same repeat with the same cookies (none, or the tabs').
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench._bench_nodes import BenchNode
from bench._loops import run, uvloop_installed
from bench._results import add_result_options, replace_doc_block, report, run_facts, stored_results
from bench.cluster import Child, broker
from tests.cluster._nodes import get_json, start_nodes, stop_nodes

DOC_START = "<!-- bench.connect_storm: generated, do not edit by hand -->"
DOC_END = "<!-- /bench.connect_storm -->"
VARIANTS = ("bare", "new sessions", "bare, tabs' cookies", "second tabs")
#: The floor of each storm: the bare one with the same cookies (or none).
FLOOR = {
    "bare": "bare",
    "new sessions": "bare",
    "bare, tabs' cookies": "bare, tabs' cookies",
    "second tabs": "bare, tabs' cookies",
}
SESSIONS = 100


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, to the nanosecond (Linux schedstat;
    ``/proc/PID/stat`` counts in 10 ms ticks, too coarse for an idle node)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` to one CPU where the machine has more than one; whether it did."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


async def settle(http: aiohttp.ClientSession, node: str) -> None:
    """Wait until the node holds no socket (the clients closed theirs)."""
    for _ in range(200):
        async with http.get(f"{node}/stats") as response:
            if (await response.json()).get("sockets", 0) == 0:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{node} still holds sockets 10 s after its clients closed them")


async def login_cookies(http: aiohttp.ClientSession, node: str, directory: Path) -> Path:
    """The ``Cookie`` headers of ``SESSIONS`` sessions logged in at ``node``, in a file."""
    lines = []
    for index in range(SESSIONS):
        async with http.post(f"{node}/login", params={"user": f"tab{index}"}) as response:
            await response.read()
            lines.append(
                "; ".join(f"{name}={morsel.coded_value}" for name, morsel in response.cookies.items())
            )
    path = directory / f"cookies-{node.rpartition(':')[2]}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


async def one_storm(
    http: aiohttp.ClientSession, client: Child, node: str, pid: int, variant: str, count: int, in_flight: int,
    cookies: Path,
) -> dict[str, float]:  # fmt: skip
    websocket = node.replace("http://", "ws://")
    command = {
        "bare": f"storm {websocket}/bench/bare-ws {count} {in_flight}",
        "new sessions": f"storm {websocket}/ws {count} {in_flight}",
        "bare, tabs' cookies": f"storm {websocket}/bench/bare-ws {count} {in_flight} {cookies}",
        "second tabs": f"storm {websocket}/ws {count} {in_flight} {cookies}",
    }[variant]
    cpu_before = cpu_seconds(pid)
    client.write_line(command)
    answer = (await client.read_line()).split()
    cpu = cpu_seconds(pid) - cpu_before
    if len(answer) != 2 or answer[0] != "done":
        raise RuntimeError(f"the storm client answered {answer!r}")
    client.write_line("release")
    if await client.read_line() != "released":
        raise RuntimeError("the storm client did not release its sockets")
    await settle(http, node)
    seconds = float(answer[1])
    return {"per_second": count / seconds, "cpu_ms_per_upgrade": cpu * 1e3 / count}


async def measure(
    nodes: dict[str, tuple[str, int]], options: argparse.Namespace, directory: Path
) -> dict[str, Any]:
    client = await Child.start("-m", "bench._storm_clients")
    pinned = client.process.pid is not None and pin(client.process.pid, 0)
    results: dict[str, Any] = {"pinned": pinned, "brokers": {}}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            cookies = {kind: await login_cookies(http, url, directory) for kind, (url, _) in nodes.items()}
            samples: dict[str, dict[str, list[dict[str, float]]]] = {
                kind: {variant: [] for variant in VARIANTS} for kind in nodes
            }
            for kind, (url, pid) in nodes.items():  # warm-up
                for variant in VARIANTS:
                    await one_storm(http, client, url, pid, variant, 200, options.in_flight, cookies[kind])
            for repeat in range(options.repeats):
                for kind, (url, pid) in nodes.items():
                    turn = repeat % len(VARIANTS)
                    for variant in VARIANTS[turn:] + VARIANTS[:turn]:
                        sample = await one_storm(
                            http, client, url, pid, variant, options.sockets, options.in_flight, cookies[kind]
                        )
                        samples[kind][variant].append(sample)
    finally:
        await client.stop()
    for kind, variants in samples.items():
        measured: dict[str, Any] = {}
        for variant, values in variants.items():
            bare = variants[FLOOR[variant]]
            rates = [value["per_second"] for value in values]
            cpu = [value["cpu_ms_per_upgrade"] for value in values]
            ratio = [
                value["per_second"] / floor["per_second"] for value, floor in zip(values, bare, strict=True)
            ]
            measured[variant] = {
                "per_second": rates,
                "cpu_ms_per_upgrade": cpu,
                "ratio_to_bare_each_repeat": ratio,
                "ratio_to_bare_median": statistics.median(ratio),
                "cpu_ratio_to_bare_median": statistics.median(
                    value["cpu_ms_per_upgrade"] / floor["cpu_ms_per_upgrade"]
                    for value, floor in zip(values, bare, strict=True)
                ),
            }
        results["brokers"][kind] = measured
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        "| broker | storm | upgrades/s (each repeat) | x bare (median) | CPU ms / upgrade | CPU x bare |",
        "|---|---|---|---:|---:|---:|",
    ]
    for kind, variants in results["brokers"].items():
        for variant, measured in variants.items():
            rates = ", ".join(f"{rate:,.0f}" for rate in measured["per_second"])
            cpu = statistics.median(measured["cpu_ms_per_upgrade"])
            rows.append(
                f"| {kind} | {variant} | {rates} | {measured['ratio_to_bare_median']:.2f}x | {cpu:.3f} | "
                f"{measured['cpu_ratio_to_bare_median']:.2f}x |"
            )
    return "\n".join(rows)


def write_doc(path: Path, results: dict[str, Any]) -> None:
    meta = results["run"]
    block = (
        f"{DOC_START}\nRun {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, load average "
        f"{meta['load_average_at_end'][0]:.1f} at the end; node pinned to one core: {results['pinned']}), "
        f"node loop {meta['loop']}, {meta['sockets']} sockets per storm, {meta['in_flight']} in flight, "
        f"{meta['repeats']} repeats.\n\n{table(results)}\n{DOC_END}"
    )
    replace_doc_block(path, DOC_START, DOC_END, block)


def run_all(options: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sessionws-storm-")))
        processes = []
        for kind in options.brokers:
            url = stack.enter_context(broker(kind))
            processes.append(
                (kind, BenchNode(f"storm-{kind}", url, directory, f"storm-{kind}", options.loop))
            )
            if options.experiment is not None:  # the same node from another copy of the repository
                name = f"{kind}-experiment"
                node = BenchNode(
                    f"storm-{name}", url, directory, f"storm-{name}", options.loop, options.experiment
                )
                processes.append((name, node))
        try:
            start_nodes([node for _, node in processes])
            nodes: dict[str, tuple[str, int]] = {}
            for kind, node in processes:
                _, health = get_json(f"{node.url}/health")
                pid = int(health["pid"])
                pin(pid, 1)
                nodes[kind] = (node.url, pid)
            results = run(measure(nodes, options, directory))
        finally:
            stop_nodes([node for _, node in processes])
    results["run"] = run_facts(
        loop=options.loop, sockets=options.sockets, in_flight=options.in_flight, repeats=options.repeats
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=3000, help="websockets per storm")
    parser.add_argument("--in-flight", type=int, default=200, help="upgrades in flight")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--brokers", default="redis,nats")
    parser.add_argument(
        "--loop", default="uvloop" if uvloop_installed() else "asyncio", help="the node's event loop"
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        metavar="SOURCE_TREE",
        help="also storm a node run from this copy of the repository (a change to measure)",
    )
    add_result_options(parser, "bench/results/connect_storm.json")
    options = parser.parse_args()
    if stored_results(options, table, write_doc):
        return
    options.brokers = options.brokers.split(",")
    results = run_all(options)
    report(options, results, table, write_doc)


if __name__ == "__main__":
    main()
