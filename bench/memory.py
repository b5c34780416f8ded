"""Memory per registered connection, beside a bare dict-of-sets floor measured in the same run.

    .venv/bin/python -m bench.memory [--n 100000] [--cycles 1] [--by-file]
        [--json bench/results/memory.json]

``tracemalloc`` counts the bytes allocated (and still alive after ``gc.collect()``) by
registering ``n`` connections on a running ``SessionRegistry("memory://", linger=0.05)``,
in two shapes:

* **a**: ``n`` sessions with one socket each, under one key (the session id);
* **b**: ``n / 2`` sessions with two sockets each, each socket under two keys
  ``[session id, "user:<i>"]``.

The connections and key strings exist before the baseline (the app has them anyway):
only what the registry adds is counted, including the in-process hub's table of
subscribed channels (``memory://``'s broker, the stand-in for a real transport's list of
wanted channels; ``--by-file`` reports it apart, slowly). The floor is a plain ``dict`` of key → ``set`` of
connections holding the same connections under the same keys, measured the same way.

After ``unregister`` of every handle the benchmark checks that ``stats()`` counts 0
sockets and reports the memory still held, then again once the linger has passed and the
keys are released. With ``--cycles 3`` the cycle is repeated: memory that grows again with
every cycle is a leak; what stays flat is table capacity CPython keeps (dicts and sets do
not shrink when emptied; the floor's emptied dict shows the same, smaller, effect).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from sessionws import Handle, SessionRegistry

LINGER = 0.05
CONCURRENCY = 500  # registrations in flight (new keys subscribe in shared batches)


class Connection:
    __slots__ = ()

    async def close(self, code: int, reason: str) -> None:
        return None

    async def send(self, data: str | bytes) -> None:
        return None


Shape = list[tuple[Connection, list[str]]]


def make_shape(name: str, n: int) -> Shape:
    """``(connection, keys)`` for every socket of shape ``name``; allocated before any baseline."""
    if name == "a":
        return [(Connection(), [f"session-{index}"]) for index in range(n)]
    sockets: Shape = []
    for index in range(n // 2):
        keys = [f"session-{index}", f"user:{index}"]
        sockets += [(Connection(), keys), (Connection(), keys)]
    return sockets


def traced() -> int:
    """Bytes traced now, after a full collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def by_file(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> dict[str, float]:
    """Bytes per connection allocated in each source file, largest first."""
    growth: dict[str, float] = {}
    for stat in after.compare_to(before, "filename"):
        name = stat.traceback[0].filename
        short = name[name.rfind("sessionws") :] if "sessionws" in name else Path(name).name
        growth[short] = growth.get(short, 0.0) + stat.size_diff / n
    return {name: size for name, size in sorted(growth.items(), key=lambda item: -item[1]) if size >= 0.5}


def floor_run(sockets: Shape) -> dict[str, float]:
    """Bytes per connection of a dict of sets; and what stays once it is emptied."""
    n = len(sockets)
    baseline = traced()
    table: dict[str, set[Connection]] = {}
    for connection, keys in sockets:
        for key in keys:
            table.setdefault(key, set()).add(connection)
    held = traced() - baseline
    for connection, keys in sockets:
        for key in keys:
            members = table[key]
            members.discard(connection)
            if not members:
                del table[key]
    retained = traced() - baseline
    del table
    return {"bytes_per_connection": held / n, "retained_when_empty_bytes": retained}


async def released(registry: SessionRegistry, timeout: float = 60.0) -> None:
    """Wait until the linger released every key (no subscription left), then a little more
    so that the linger task's unsubscribe has returned."""
    for _ in range(int(timeout / LINGER)):
        if registry.stats()["subscriptions"] == 0:
            await anyio.sleep(LINGER)
            return
        await anyio.sleep(LINGER)
    raise TimeoutError("the linger did not release the keys")


async def cycle(registry: SessionRegistry, sockets: Shape, handles: list[Handle | None]) -> None:
    """Register every socket, ``CONCURRENCY`` at a time."""
    indexes = iter(range(len(sockets)))

    async def worker() -> None:
        for index in indexes:  # shared: each index goes to one worker
            connection, keys = sockets[index]
            handles[index] = await registry.register(connection, keys)

    async with anyio.create_task_group() as tasks:
        for _ in range(CONCURRENCY):
            tasks.start_soon(worker)


async def registry_run(sockets: Shape, cycles: int, breakdown: bool) -> dict[str, Any]:
    n = len(sockets)
    handles: list[Handle | None] = [None] * n
    result: dict[str, Any] = {"retained_after_linger_bytes_by_cycle": []}
    async with SessionRegistry("memory://", linger=LINGER) as registry:
        # Alive until the end, so in every reading (and in none of the differences).
        before = tracemalloc.take_snapshot() if breakdown else None
        baseline = traced()
        for round_ in range(cycles):
            started = time.perf_counter()
            await cycle(registry, sockets, handles)
            seconds = time.perf_counter() - started
            held = traced() - baseline
            if round_ == 0 and before is not None:
                result["by_file"] = by_file(before, tracemalloc.take_snapshot(), n)
            stats = registry.stats()
            for index, handle in enumerate(handles):
                if handle is not None:
                    await registry.unregister(handle)
                    handles[index] = None
            sockets_left = registry.stats()["sockets"]
            after_unregister = traced() - baseline
            await released(registry)
            result["retained_after_linger_bytes_by_cycle"].append(traced() - baseline)
            result["sockets_after_unregister"] = max(sockets_left, result.get("sockets_after_unregister", 0))
            if round_ == 0:
                result |= {
                    "bytes_per_connection": held / n,
                    "register_seconds_traced": seconds,
                    "keys": stats["keys"],
                    "sockets": stats["sockets"],
                    "retained_after_unregister_bytes": after_unregister,
                    "retained_after_linger_bytes": result["retained_after_linger_bytes_by_cycle"][0],
                }
        del before
    return result


async def measure(n: int, cycles: int, breakdown: bool) -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    for name in ("a", "b"):
        sockets = make_shape(name, n)
        shape = shapes[name] = {
            "floor": floor_run(sockets),
            "sessionws": await registry_run(sockets, cycles, breakdown),
        }
        floor = shape["floor"]["bytes_per_connection"]
        run = shape["sessionws"]
        shape["ratio"] = run["bytes_per_connection"] / floor
        if breakdown:
            hub = sum(size for file, size in run["by_file"].items() if file.endswith("_memory.py"))
            shape["hub_bytes_per_connection"] = hub
            shape["ratio_without_hub"] = (run["bytes_per_connection"] - hub) / floor
        del sockets
    return shapes


def table(n: int, cycles: int, breakdown: bool, shapes: dict[str, Any]) -> str:
    labels = {
        "a": f"a: {n:,} sessions x 1 socket, 1 key",
        "b": f"b: {n // 2:,} sessions x 2 sockets, 2 keys each",
    }
    hub_header = " of which hub (memory://) | x floor w/o hub |" if breakdown else ""
    rows = [f"| shape | floor B/conn | sessionws B/conn | x floor |{hub_header}", "|---|---:|---:|---:|"]
    rows[1] += "---:|---:|" if breakdown else ""
    for name, shape in shapes.items():
        floor, run = shape["floor"], shape["sessionws"]
        row = f"| {labels[name]} | {floor['bytes_per_connection']:.0f} | {run['bytes_per_connection']:.0f} | "
        row += f"{shape['ratio']:.2f}x |"
        if breakdown:
            row += f" {shape['hub_bytes_per_connection']:.0f} | {shape['ratio_without_hub']:.2f}x |"
        rows.append(row)
    after_linger = "KiB held after the linger" + (f" (cycles 1..{cycles})" if cycles > 1 else "")
    rows += [
        "",
        f"| shape | stats() sockets after unregister | KiB held after unregister | {after_linger} | "
        "floor: KiB held once emptied |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, shape in shapes.items():
        run = shape["sessionws"]
        lingered = " / ".join(f"{size / 1024:,.0f}" for size in run["retained_after_linger_bytes_by_cycle"])
        unregistered = run["retained_after_unregister_bytes"] / 1024
        emptied = shape["floor"]["retained_when_empty_bytes"] / 1024
        sockets_left = run["sockets_after_unregister"]
        rows.append(f"| {name} | {sockets_left} | {unregistered:,.0f} | {lingered} | {emptied:,.0f} |")
    if breakdown:
        rows += ["", "Where sessionws' bytes per connection are allocated (shape a / shape b):"]
        by_file = [shapes[name]["sessionws"]["by_file"] for name in ("a", "b")]
        for file in dict.fromkeys([*by_file[0], *by_file[1]]):
            rows.append(f"  {file}: {by_file[0].get(file, 0.0):.0f} / {by_file[1].get(file, 0.0):.0f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="registered connections per shape")
    parser.add_argument("--cycles", type=int, default=1, help="register/unregister cycles per shape")
    parser.add_argument(
        "--by-file", action="store_true", help="also break the bytes down by source file (slow)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/memory.json"))
    args = parser.parse_args()
    tracemalloc.start()
    shapes = anyio.run(measure, args.n, args.cycles, args.by_file)
    tracemalloc.stop()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "n": args.n,
        "linger": LINGER,
        "cycles": args.cycles,
        "shapes": shapes,
    }
    print(table(args.n, args.cycles, args.by_file, shapes))
    for name, shape in shapes.items():
        run = shape["sessionws"]
        if run["sockets_after_unregister"]:
            print(f"PROBLEM: shape {name}: stats() counts sockets after every handle was unregistered")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
