"""One campaign run: a cluster, the nemesis and the workload at once, then the checks.

1. Start the broker (Redis with AOF) and three aiohttp nodes with a short broker
   command timeout.
2. Run the nemesis (the seed's fault schedule) and the workload side by side for
   ``duration`` seconds; every fault undoes itself.
3. Heal whatever is left, then wait (up to ``convergence`` seconds) for the outcomes
   that must come: sockets of closed keys closed, outboxes empty.
4. Check the invariants; let every client leave; wait for the registries and the
   broker to be empty; read the node logs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster._clients import Clients
from tests.cluster._cluster import NAMESPACE, Cluster, local_cluster
from tests.cluster._nodes import NodeProcess, get_json
from tests.faults._broker_control import PERSISTENT_REDIS, BrokerControl
from tests.faults._checker import Checker, Violation
from tests.faults._history import Entry, History
from tests.faults._nemesis import Nemesis, plan, start_node
from tests.faults._workload import Workload

__all__ = ("Outcome", "Settings", "run_campaign")

#: The nodes' ``confirm_timeout`` (``tests/cluster/_app_common.py``).
_CONFIRM_TIMEOUT = 2.0


@dataclass(frozen=True)
class Settings:
    """How long a run lasts and how patient its checks are."""

    duration: float = 10.0
    #: The nodes' broker command timeout: broker pauses are drawn around it.
    command_timeout: float = 1.0
    #: How long the outcomes that must come may take once every fault is healed.
    convergence: float = 15.0
    #: Added to a call's own timeout before it counts as hung (the machine is shared).
    slack: float = 10.0
    #: After a data loss, how long the nodes may take to re-assert the revocations
    #: (they reconnect within 0.2 s; the rest is for a loaded machine).
    grace: float = 2.0

    @property
    def call_bound(self) -> float:
        # A close takes a sequence, writes a marker and publishes: three broker steps at
        # most, each bounded by the command timeout, and a confirmation wait.
        return 3 * self.command_timeout + _CONFIRM_TIMEOUT + self.slack


@dataclass
class Outcome:
    history: History
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def phases(self) -> str:
        """When each phase of the run ended (seconds since its start)."""
        notes = [entry for entry in self.history.entries if entry.actor == "campaign"]
        return ", ".join(f"{entry.what} {entry.start:.1f} s" for entry in notes)

    def report(self, test_id: str = "") -> str:
        lines = [
            f"{len(self.violations)} violation(s) in the {self.history.kind} campaign, "
            f"seed {self.history.seed}",
            f"replay: {self.history.replay(test_id)}",
            f"run: {self.counts}",
            "",
        ]
        lines += [violation.render() for violation in self.violations]
        return "\n".join([*lines, "", self.history.render()])


async def run_campaign(kind: str, seed: int, settings: Settings, directory: Path) -> Outcome:
    node_arguments = ["--command-timeout", str(settings.command_timeout), "--record-events"]
    with local_cluster(
        kind, directory, node_arguments=node_arguments, redis_arguments=PERSISTENT_REDIS
    ) as cluster:
        history = History(seed, kind)
        broker = BrokerControl(cluster)
        schedule = plan(
            seed, kind, settings.duration, settings.command_timeout, proxied=bool(cluster.proxies)
        )
        async with Clients(cluster, connections=0, timeout=60.0) as clients:
            workload = Workload(cluster, clients, history, seed)
            nemesis = Nemesis(cluster, broker, history, workload)
            watching = asyncio.create_task(_watch(cluster, history))
            try:
                async with asyncio.TaskGroup() as run:
                    run.create_task(nemesis.run(schedule))
                    run.create_task(workload.run(settings.duration))
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            history.note("campaign", "faults over", "all", f"{len(schedule)} faults planned")
            await asyncio.to_thread(_heal, cluster, broker)
            history.note("campaign", "healed", "all")
            outcome = Outcome(history)
            checker = Checker(history, workload.sockets, call_bound=settings.call_bound, grace=settings.grace)
            pending = await _converge(
                lambda: (
                    checker.stale_sockets()
                    + checker.outboxes(_stats(cluster))
                    + checker.membership(_get_all(cluster, "/events"))
                    + _whole(cluster)
                ),
                settings.convergence,
            )
            history.note("campaign", "converged", "all", f"{len(pending)} outcome(s) never came")
            outcome.violations += pending
            outcome.violations += checker.revoked_registrations()
            outcome.violations += checker.unexplained_closes()
            outcome.violations += checker.hung_calls()
            outcome.violations += checker.false_completes()
            await workload.leave_all()
            outcome.violations += await _converge(
                lambda: checker.leaks(_stats(cluster), cluster.broker.key_subscriptions(NAMESPACE)),
                settings.convergence,
            )
            history.note("campaign", "clients left", "all")
            outcome.violations += checker.logs({node.name: _log(node) for node in _processes(cluster)})
            _blame_deaf_nodes(outcome.violations)
            outcome.counts = _counts(history, workload)
    return outcome


async def _watch(cluster: Cluster, history: History) -> None:
    """Record when each node says its broker connection is down (``away``): it does not
    beat then, so the others count its silence, which the checker must know."""
    away: dict[str, Entry] = {}
    try:
        while True:
            healths = await asyncio.gather(*(asyncio.to_thread(_health, node.url) for node in cluster.nodes))
            for node, broker in zip(cluster.nodes, healths, strict=True):
                if broker == "disconnected" and node.name not in away:
                    away[node.name] = history.begin("watch", "away", node.name)
                elif broker == "connected" and node.name in away:
                    history.finish(away.pop(node.name), "connected")
            await asyncio.sleep(0.1)
    finally:
        for entry in away.values():
            history.finish(entry, "watch over")


def _health(url: str) -> str | None:
    """The node's broker state, or ``None`` when it does not answer (paused, dead)."""
    try:
        _, body = get_json(f"{url}/health", timeout=0.5)
    except OSError:
        return None
    return str(body.get("broker")) if isinstance(body, dict) else None


def _blame_deaf_nodes(violations: list[Violation]) -> None:
    """A node whose NATS client stopped reading (bug "new 2") hears no heartbeat, no close
    and no broker answer: what follows from that on that node is the same bug."""
    deaf = {
        v.message.partition(":")[0]
        for v in violations
        if v.invariant == "traceback in a node log" and v.bug == "new 2"
    }
    for violation in violations:
        if any(
            violation.message.startswith(f"{name}:")
            or violation.message.startswith(f"{name} ")
            or f" on {name} " in violation.message
            for name in deaf
        ):
            violation.bug = "new 2"


def _processes(cluster: Cluster) -> list[NodeProcess]:
    return [node for node in cluster.nodes if isinstance(node, NodeProcess)]


def _heal(cluster: Cluster, broker: BrokerControl) -> None:
    """Undo anything a fault left behind (each fault undoes itself; this is the net)."""
    for index in cluster.proxies:
        cluster.restore(index)
    broker.ensure_running()
    for node in _processes(cluster):
        node.resume()
    for node in _processes(cluster):
        if not node.alive:
            start_node(node)


def _whole(cluster: Cluster) -> list[Violation]:
    """Once healed, every node is healthy and hears every other (a node whose broker
    client stopped reading hears nobody)."""
    healths = _get_all(cluster, "/health")
    ids = {str(health.get("node")) for health in healths.values()}
    broken = {
        name: health
        for name, health in healths.items()
        if not health.get("healthy") or set(health.get("live_nodes") or ()) != ids - {str(health.get("node"))}
    }
    return [
        Violation("cluster not whole after healing", "new", f"{name}: {health}")
        for name, health in broken.items()
    ]


def _stats(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return _get_all(cluster, "/stats", {"outbox": -1})


def _get_all(cluster: Cluster, path: str, failed: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``GET path`` of every node (``failed`` and the error for a node that did not answer)."""
    found: dict[str, dict[str, Any]] = {}
    for node in cluster.nodes:
        try:
            _, body = get_json(f"{node.url}{path}", timeout=5.0)
        except OSError as error:
            body = {**(failed or {}), "unreachable": str(error)}
        found[node.name] = body if isinstance(body, dict) else {**(failed or {}), "answer": body}
    return found


async def _converge(check: Callable[[], list[Violation]], timeout: float) -> list[Violation]:
    """Run ``check`` until it finds nothing or ``timeout`` passes; its last findings."""
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(check)
        if not found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.25)


def _log(node: NodeProcess) -> str:
    try:
        return node.log_path.read_text(errors="replace")
    except OSError:
        return ""


def _counts(history: History, workload: Workload) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in history.entries:
        if entry.outcome != "skipped":
            name = f"{entry.what}{'(storm)' if entry.detail.get('storm') else ''}"
            counts[name] = counts.get(name, 0) + 1
    counts["sockets registered"] = sum(1 for tracked in workload.sockets if tracked.socket.handle)
    return counts
