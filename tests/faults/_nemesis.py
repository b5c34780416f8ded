"""The nemesis: faults drawn from the seed, injected at their times, overlapping.

:func:`plan` turns a seed into a schedule (the same seed, the same schedule); a
:class:`Nemesis` runs it. Each fault takes its target (the broker, a node, a NATS
server) for as long as it lasts and always undoes itself (resume, restart, heal); a
fault whose target is busy when its time comes is recorded as skipped. Blocking work
(a broker restart waits for the servers) runs in a thread, so the workload and the
clients' readers go on meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.cluster._cluster import PROXIED, Cluster
from tests.cluster._nodes import ControlledNode, start_nodes
from tests.faults._broker_control import BrokerControl
from tests.faults._history import Entry, History

__all__ = ("FAULTS", "Nemesis", "Planned", "Storms", "plan", "start_node")

#: Every fault the nemesis knows, with its weight (0 where the cluster cannot have it).
FAULTS = (
    "broker-kill",
    "broker-pause",
    "node-kill",
    "node-pause",
    "node-cut",
    "pool-storm",
    "connect-storm",
    "nats-failover",
)


@dataclass(frozen=True)
class Planned:
    """One fault of the schedule: when, what, on what, with which parameters."""

    at: float
    what: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)


class Storms(Protocol):
    """The workload's side of the storms (they are verbs and clients, not signals)."""

    async def pool_storm(self, node: int, calls: int) -> str: ...

    async def connect_storm(self, node: int, sockets: int) -> str: ...


def _weights(kind: str, proxied: bool) -> dict[str, int]:
    weights = {
        "broker-kill": 3,
        "broker-pause": 4,
        "node-kill": 3,
        "node-pause": 4,
        "node-cut": 4 if proxied else 0,
        "pool-storm": 2,
        "connect-storm": 2,
        "nats-failover": 4 if kind == "nats-cluster" else 0,
    }
    if kind == "nats-cluster":
        weights["broker-kill"] = 1  # a full restart costs 10-30 s of JetStream elections
    return weights


def plan(seed: int, kind: str, duration: float, command_timeout: float, *, proxied: bool) -> list[Planned]:
    """The faults of a run of ``duration`` seconds, from ``seed`` alone."""
    rng = random.Random(f"nemesis:{seed}")
    weights = _weights(kind, proxied)
    names = [name for name in FAULTS if weights[name]]
    schedule: list[Planned] = []
    at = rng.uniform(0.3, 1.0)
    while at < duration:
        what = rng.choices(names, [weights[name] for name in names])[0]
        node = rng.randrange(3)
        if what == "broker-kill":
            params: dict[str, Any] = {
                "keep_data": rng.random() < 0.6,
                "down": round(rng.uniform(0.2, 2.0), 2),
            }
            target = "broker"
        elif what == "broker-pause":
            longer = rng.random() < 0.5  # than the nodes' command timeout
            factor = rng.uniform(1.5, 2.5) if longer else rng.uniform(0.2, 0.7)
            params = {"seconds": round(factor * command_timeout, 2), "longer_than_timeout": longer}
            target = "broker"
        elif what == "node-kill":
            params, target = {"down": round(rng.uniform(0.2, 2.0), 2)}, f"node{node + 1}"
        elif what == "node-pause":
            # 3 heartbeats (0.6 s) expire a node from its peers' membership.
            params, target = {"seconds": round(rng.uniform(0.2, 3.0), 2)}, f"node{node + 1}"
        elif what == "node-cut":
            params, target = {"seconds": round(rng.uniform(0.3, 3.0), 2)}, f"node{PROXIED + 1}"
        elif what == "pool-storm":
            params, target = {"calls": rng.randrange(200, 501)}, f"node{node + 1}"
        elif what == "connect-storm":
            params, target = {"sockets": rng.randrange(30, 121)}, f"node{node + 1}"
        else:  # nats-failover
            server = rng.randrange(3)
            params, target = {"down": round(rng.uniform(1.0, 4.0), 2)}, f"n{server + 1}"
        schedule.append(Planned(round(at, 2), what, target, params))
        at += rng.uniform(0.4, 2.5)
    return schedule


class Nemesis:
    """Runs a schedule against a cluster, recording each fault in the history."""

    def __init__(self, cluster: Cluster, broker: BrokerControl, history: History, storms: Storms) -> None:
        self.cluster = cluster
        self.broker = broker
        self.history = history
        self.storms = storms
        self._busy: set[str] = set()

    async def run(self, schedule: list[Planned]) -> None:
        """Inject every fault at its time; return when all are undone."""
        async with asyncio.TaskGroup() as faults:
            for planned in schedule:
                delay = planned.at - self.history.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                # A failover restarts one server of the broker: no other broker fault meanwhile.
                lock = "broker" if planned.what == "nats-failover" else planned.target
                if lock in self._busy:
                    self.history.note("nemesis", planned.what, planned.target, "skipped", **planned.params)
                    continue
                self._busy.add(lock)
                faults.create_task(self._inject(planned, lock))

    async def _inject(self, planned: Planned, lock: str) -> None:
        entry = self.history.begin("nemesis", planned.what, planned.target, **planned.params)
        outcome = ""
        try:
            outcome = await getattr(self, "_" + planned.what.replace("-", "_"))(planned, entry)
        except Exception as error:  # a fault that could not be injected is a broken harness
            outcome = f"failed: {type(error).__name__}: {error}"
            raise
        finally:
            self.history.finish(entry, outcome)
            self._busy.discard(lock)

    # ------------------------------------------------------------------ the faults
    async def _broker_kill(self, planned: Planned, entry: Entry) -> str:
        self.broker.kill()
        await asyncio.sleep(planned.params["down"])
        kept = await asyncio.to_thread(self.broker.restart, keep_data=planned.params["keep_data"])
        entry.detail["data_kept"] = kept  # a restart "with data" after a volatile run loses it
        return "restarted, data kept" if kept else "restarted, data lost"

    async def _broker_pause(self, planned: Planned, entry: Entry) -> str:
        self.broker.pause()
        try:
            await asyncio.sleep(planned.params["seconds"])
        finally:
            self.broker.resume()
        return "resumed"

    async def _node_kill(self, planned: Planned, entry: Entry) -> str:
        node = self.cluster.process(_index(planned.target))
        node.kill()
        await asyncio.sleep(planned.params["down"])
        return await asyncio.to_thread(start_node, node)

    async def _node_pause(self, planned: Planned, entry: Entry) -> str:
        node = self.cluster.process(_index(planned.target))
        node.pause()
        try:
            await asyncio.sleep(planned.params["seconds"])
        finally:
            node.resume()
        return "resumed"

    async def _node_cut(self, planned: Planned, entry: Entry) -> str:
        index = _index(planned.target)
        await asyncio.to_thread(self.cluster.cut, index)
        try:
            await asyncio.sleep(planned.params["seconds"])
        finally:
            self.cluster.restore(index)
        return "healed"

    async def _pool_storm(self, planned: Planned, entry: Entry) -> str:
        return await self.storms.pool_storm(_index(planned.target), planned.params["calls"])

    async def _connect_storm(self, planned: Planned, entry: Entry) -> str:
        return await self.storms.connect_storm(_index(planned.target), planned.params["sockets"])

    async def _nats_failover(self, planned: Planned, entry: Entry) -> str:
        server = int(planned.target[1:]) - 1
        self.broker.kill_server(server)
        await asyncio.sleep(planned.params["down"])
        await asyncio.to_thread(self.broker.start_server, server)
        return "rejoined"


def start_node(node: ControlledNode, timeout: float = 90.0) -> str:
    """Start ``node`` again; how it went. A node that exits at start (it refuses to start
    while it cannot reach the broker, e.g. Redis Cluster discovery during an outage) is
    started again; one that runs but is not healthy in time is left running (the final
    checks see whether it heals)."""
    deadline = time.monotonic() + timeout
    failed = 0
    while True:
        try:
            start_nodes([node], 30.0)
        except TimeoutError:
            return f"restarted, not healthy within 30 s ({failed} failed starts)"
        except RuntimeError:
            failed += 1
            node.kill()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            return f"restarted after {failed} failed start(s)" if failed else "restarted"


def _index(target: str) -> int:
    return int(target.removeprefix("node")) - 1
