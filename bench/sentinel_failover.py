"""What a Redis Sentinel failover loses: closes acknowledged by the old master, missing on the new one.

    .venv/bin/python -m bench.sentinel_failover [--failovers 10] [--in-flight 8]
        [--replica-lag-ms 0] [--json bench/results/sentinel_failover.json]

A master, a replica and three sentinels (``down-after-milliseconds`` 300) run on loopback
ports. Each round, ``in_flight`` writers stream closes through a ``RedisSentinelTransport``
exactly as the registry sends them on standalone Redis (one script: ``INCR`` the sequence,
write the key's marker, publish), each on a key of its own, as fast as they can. Then the
master is SIGKILLed mid-stream; the writers stop; the sentinels promote the replica. On the
new master we read:

* the marker of every close the old master **acknowledged**: missing means the close was
  lost by asynchronous replication (its message was published before the master died, so
  nodes connected at that moment still closed their sockets; what is gone is the marker that
  a later registration or reconcile would have found);
* the sequence: how far it went **backwards** (the newest acknowledged sequence minus the
  promoted replica's counter): sequences the next closes will take again.

Beside them, two ``SessionRegistry`` nodes on their own transports each hold a socket; the
round checks that both noticed the new master (the transport's ``identity`` changed) and
closed their socket with 1012, as after a broker data loss. Node a also revokes a key just
before the master dies; afterwards node b (which never held the key, so asks the broker)
says whether the new master still knows the revocation. The killed master then rejoins
as a replica and the next round starts once the sentinels see it.

On loopback the replica is never behind; ``--replica-lag-ms D`` stalls it (SIGSTOP) for
``D`` ms just before the master dies while bulk writes fill the socket buffers between
them, as a slow network or a paused VM would: closes acknowledged after the buffers filled
wait in the master's memory and die with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio

from sessionws import CLOSE_UNKNOWN_STATE, SessionRegistry, TransportError
from sessionws_redis import RedisSentinelTransport
from tests._helpers import wait_for
from tests._redis_sentinel_servers import SentinelGroup, running_sentinel_group
from tests.core.helpers import RecordingConnection

FAST = (
    "?reconnect_min_delay=0.01&reconnect_max_delay=0.1&open_timeout=10&command_timeout=5"
    "&failover_check_interval=0.2"
)
STREAM_BEFORE_KILL = 1.0  # seconds of closes before the master dies
TIMEOUT = 60.0


class Stream:
    """Writers taking closes on distinct keys; what the old master acknowledged."""

    def __init__(self, transport: RedisSentinelTransport, label: str) -> None:
        self.transport = transport
        self.label = label
        self.acknowledged: dict[str, int] = {}  # key -> sequence
        self.failed = 0
        self.in_flight = 0
        self.in_flight_at_kill = 0
        self.stopped = False
        self._counter = 0

    async def writer(self) -> None:
        while not self.stopped:
            self._counter += 1
            key = f"{self.label}:{self._counter}"
            self.in_flight += 1
            try:
                sequence, _ = await self.transport.mark_and_publish_numbered(
                    key, b"close", 3600.0, f"bench.{key}", b'{"s":', b"}"
                )
            except TransportError:
                self.failed += 1
            else:
                self.acknowledged[key] = sequence
            finally:
                self.in_flight -= 1


async def one_round(group: SentinelGroup, index: int, in_flight: int, replica_lag: float) -> dict[str, Any]:
    url = group.url + FAST
    stream_transport = RedisSentinelTransport.from_url(url)
    async with (
        SessionRegistry(url, node_id=f"a{index}", heartbeat_interval=0.5) as node_a,
        SessionRegistry(url, node_id=f"b{index}", heartbeat_interval=0.5) as node_b,
        stream_transport.open(_Quiet()),
    ):
        sockets = [RecordingConnection("a"), RecordingConnection("b")]
        await node_a.register(sockets[0], f"round{index}-a")
        await node_b.register(sockets[1], f"round{index}-b")
        identity = node_a.transport.identity
        nodes = (node_a, node_b)
        stream = Stream(stream_transport, f"round{index}")
        async with anyio.create_task_group() as writers:
            for _ in range(in_flight):
                writers.start_soon(stream.writer)
            await anyio.sleep(STREAM_BEFORE_KILL)
            old = group.master()
            replica = next(server for server in group.servers if server is not old)
            if replica_lag > 0:
                # The replica stalls (a slow link, a paused VM) while bulk writes fill the
                # socket buffers between the two: the master keeps acknowledging closes
                # that wait in its own output buffer for the replica.
                replica.pause()
                await fill_replication_buffers(old.port, replica_lag)
            # A revoke acknowledged by the old master just before it dies.
            revoked = f"round{index}-revoked"
            await node_a.revoke(revoked)
            killed_at = time.monotonic()
            old.kill()
            replica.resume()
            stream.in_flight_at_kill = stream.in_flight
            stream.stopped = True
        acknowledged_at_kill = dict(stream.acknowledged)
        await anyio.to_thread.run_sync(group.wait_failover, old)
        promoted_after = time.monotonic() - killed_at
        await wait_for(
            lambda: all(node.healthy and node.transport.identity not in ("", identity) for node in nodes),
            TIMEOUT,
        )
        followed_after = time.monotonic() - killed_at
        await wait_for(lambda: all(socket.close_code is not None for socket in sockets), TIMEOUT)
        # Node b never held the key: it asks the new master. Node a remembers its own.
        revocation_on_new_master = await node_b.is_revoked(revoked)
        revocation_remembered_by_issuer = await node_a.is_revoked(revoked)
        with anyio.fail_after(TIMEOUT):
            while True:
                try:
                    keys = list(acknowledged_at_kill)
                    markers = await stream_transport.read_markers(keys)
                    current = await stream_transport.current_sequence()
                    break
                except TransportError:
                    await anyio.sleep(0.05)
        lost = [
            key
            for key, marker in zip(keys, markers, strict=True)
            if marker is None or marker.sequence != acknowledged_at_kill[key]
        ]
        newest = max(acknowledged_at_kill.values(), default=0)
        lost_sequences = [acknowledged_at_kill[key] for key in lost]
        result = {
            "round": index,
            "acknowledged": len(acknowledged_at_kill),
            "in_flight_at_kill": stream.in_flight_at_kill,
            "failed_calls": stream.failed,
            "lost_acknowledged": len(lost),
            "lost_sequences_from_to": [min(lost_sequences), max(lost_sequences)] if lost_sequences else [],
            "newest_acknowledged_sequence": newest,
            "sequence_after_failover": current,
            "sequence_went_back_by": max(0, newest - current),
            "promoted_after_s": round(promoted_after, 3),
            "nodes_followed_after_s": round(followed_after, 3),
            "sockets_closed_1012": sum(socket.close_code == CLOSE_UNKNOWN_STATE for socket in sockets),
            "identity_changed": node_a.transport.identity != identity,
            "revocation_on_new_master": revocation_on_new_master,
            "revocation_remembered_by_issuer": revocation_remembered_by_issuer,
        }
    await anyio.to_thread.run_sync(group.rejoin, old)
    return result


async def fill_replication_buffers(port: int, seconds: float) -> None:
    """Write 64 KiB values to the master for ``seconds`` (at most 64 MiB)."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    value = os.urandom(1 << 16)
    try:
        with anyio.move_on_after(seconds):
            for index in range(1024):
                await client.set(f"bench:filler:{index}", value)
            await anyio.sleep_forever()
    finally:
        await client.aclose()


class _Quiet:
    def message_received(self, channel: str, payload: bytes) -> None:
        pass

    def connection_lost(self) -> None:
        pass

    def connection_restored(self) -> None:
        pass


async def run(failovers: int, in_flight: int, replica_lag: float) -> dict[str, Any]:
    with running_sentinel_group(down_after_ms=300) as group:
        rounds = []
        for index in range(failovers):
            if index:
                # Sentinel waits twice its failover-timeout before failing the same
                # master name over again.
                await anyio.sleep(4.5)
            result = await one_round(group, index, in_flight, replica_lag)
            print(json.dumps(result))
            rounds.append(result)
    lost = [r["lost_acknowledged"] for r in rounds]
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "failovers": failovers,
        "in_flight": in_flight,
        "replica_lag_s": replica_lag,
        "rounds": rounds,
        "summary": {
            "acknowledged_total": sum(r["acknowledged"] for r in rounds),
            "lost_total": sum(lost),
            "rounds_with_loss": sum(1 for n in lost if n),
            "lost_per_round_max": max(lost),
            "sequence_went_back_max": max(r["sequence_went_back_by"] for r in rounds),
            "promoted_after_s_median": statistics.median(r["promoted_after_s"] for r in rounds),
            "nodes_followed_after_s_median": statistics.median(r["nodes_followed_after_s"] for r in rounds),
            "revocations_lost": sum(1 for r in rounds if not r["revocation_on_new_master"]),
            "rounds_detected_by_every_node": sum(
                1 for r in rounds if r["identity_changed"] and r["sockets_closed_1012"] == 2
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--replica-lag-ms", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    report = anyio.run(run, arguments.failovers, arguments.in_flight, arguments.replica_lag_ms / 1000)
    print(json.dumps(report["summary"], indent=2))
    if arguments.json is not None:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
