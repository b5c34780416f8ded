"""Local register + unregister throughput, beside a bare dict-of-sets floor.

    .venv/bin/python -m bench.register [--n 200000] [--json bench/results/register.json]

The floor is what any registry must at least do: add a connection to a set in a
dict keyed by session id, and remove it again. The measured part is
``await registry.register(conn, key)`` + ``await registry.unregister(handle)`` on a
running ``SessionRegistry`` over ``memory://`` while the key's channel is already
subscribed (the local part; the subscribe path costs a broker round trip and is
measured with the brokers). A second line reports the first-socket-of-a-key path
over the in-process hub, for reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import anyio

from sessionws import SessionRegistry


class Connection:
    async def close(self, code: int, reason: str) -> None:
        return None

    async def send(self, data: str | bytes) -> None:
        return None


def floor_run(n: int) -> float:
    """Seconds per add+remove pair on a dict of sets."""
    table: dict[str, set[object]] = {"session": {object()}}
    connections = [object() for _ in range(1024)]
    start = time.perf_counter()
    for index in range(n):
        connection = connections[index & 1023]
        table.setdefault("session", set()).add(connection)
        members = table["session"]
        members.discard(connection)
        if not members:
            del table["session"]
    return (time.perf_counter() - start) / n


async def measure(n: int, repeats: int) -> dict[str, list[float]]:
    """Floor and registry runs alternate, so that both see the same machine: on a shared
    machine the speed drifts between runs, and a ratio of two figures measured minutes
    apart would measure the drift."""
    async with SessionRegistry("memory://", linger=60.0) as registry:
        keeper = await registry.register(Connection(), "session")  # the key stays subscribed
        connection = Connection()
        floor: list[float] = []
        local: list[float] = []
        for _ in range(repeats):
            floor.append(floor_run(n))
            start = time.perf_counter()
            for _ in range(n):
                handle = await registry.register(connection, "session")
                await registry.unregister(handle)
            local.append((time.perf_counter() - start) / n)
        fresh = []
        small = max(1, n // 20)
        for repeat in range(repeats):
            start = time.perf_counter()
            for index in range(small):
                handle = await registry.register(connection, f"new-{repeat}-{index}")
                await registry.unregister(handle)
            fresh.append((time.perf_counter() - start) / small)
        await registry.unregister(keeper)
    return {"floor": floor, "local": local, "first_socket_of_a_key": fresh}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/register.json"))
    args = parser.parse_args()
    runs = anyio.run(measure, args.n, args.repeats)
    best_floor, best_local = min(runs["floor"]), min(runs["local"])
    pair_ratios = [local / floor for floor, local in zip(runs["floor"], runs["local"], strict=True)]
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "n": args.n,
        "repeats": args.repeats,
        "floor_us": best_floor * 1e6,
        "local_us": best_local * 1e6,
        "local_median_us": statistics.median(runs["local"]) * 1e6,
        "first_socket_of_a_key_us": min(runs["first_socket_of_a_key"]) * 1e6,
        "ratio": best_local / best_floor,
        "ratio_median_of_pairs": statistics.median(pair_ratios),
        "local_per_second": 1 / best_local,
    }
    print(f"dict-of-sets add+remove (floor):   {result['floor_us']:.3f} µs")
    print(
        f"register+unregister (local part):  {result['local_us']:.3f} µs"
        f"  ({result['local_per_second']:,.0f}/s, median of runs {result['local_median_us']:.3f} µs)"
    )
    print(
        f"ratio to the floor:                {result['ratio']:.2f}x best/best, "
        f"{result['ratio_median_of_pairs']:.2f}x median of {args.repeats} back-to-back pairs  (target <= 5x)"
    )
    print(f"first socket of a key (memory hub): {result['first_socket_of_a_key_us']:.1f} µs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
