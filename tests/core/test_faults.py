"""Faults beyond kill and restart: a broker that freezes without dropping the
connection, a broker that lost its data, a node that falls silent (issue 11).

Each test fails on a registry that flushes its outbox only on reconnect, forgets
revocations with the broker's data, compares sequences across broker epochs, drops
silent nodes without an event, or calls a close complete without their answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from sessionws import Event, MemoryHub, MemoryTransport, SessionRegistry, TransportError
from sessionws._wire import Command, WireCodec
from sessionws.transport import Marker
from tests._helpers import FAST, wait_for
from tests.core.helpers import RecordingConnection, cluster, settle

pytestmark = pytest.mark.anyio


async def test_a_close_the_broker_did_not_take_is_sent_without_any_reconnect() -> None:
    """The broker answers again without the connection ever dropping (a frozen
    broker that came back, a full client pool): the outbox sends itself."""
    async with cluster(2) as nodes:
        remote = RecordingConnection()
        await nodes[1].register(remote, "session-a")
        nodes.transport(0).refuse(1)  # the next command times out; the connection stays up
        report = await nodes[0].close_all("session-a")
        assert report.queued
        assert nodes.transport(0).connected
        assert nodes[0].stats()["outbox"] == 1 or remote.close_code == 1000
        await wait_for(lambda: remote.close_code == 1000)
        await wait_for(lambda: nodes[0].stats()["outbox"] == 0)
        assert nodes[0].stats()["outbox_sent"] == 1
        assert nodes[0].healthy


async def test_a_node_is_not_healthy_while_its_outbox_holds_commands() -> None:
    async with cluster(2) as nodes:
        await nodes[1].register(RecordingConnection(), "session-a")
        nodes.transport(0).refuse(50)
        await nodes[0].close_all("session-a")
        assert nodes[0].stats()["outbox"] >= 1
        assert not nodes[0].healthy
        await wait_for(lambda: nodes[0].healthy, timeout=10)


async def test_the_outbox_keeps_the_order_of_commands_and_later_ones_wait_behind_it() -> None:
    async with cluster(2) as nodes:
        remote = RecordingConnection()
        await nodes[1].register(remote, "session-a")
        nodes.transport(0).refuse(3)
        await nodes[0].send_all("session-a", "first")
        await nodes[0].send_all("session-a", "second")  # waits behind "first", even if it could go
        await nodes[0].close_all("session-a", reason="last")
        await wait_for(lambda: remote.close_code == 1000, timeout=10)
        assert remote.sent == ["first", "second"]
        assert remote.close_reason == "last"


async def test_a_revoke_waiting_in_the_outbox_is_enforced_here_at_once() -> None:
    async with cluster(2) as nodes:
        nodes.transport(0).refuse(5)
        report = await nodes[0].revoke("user-1")
        assert report.queued
        assert await nodes[0].is_revoked("user-1")
        late = RecordingConnection()
        await nodes[0].register(late, "user-1")
        await wait_for(lambda: late.close_code == 4401)
        await wait_for(lambda: nodes[0].stats()["outbox"] == 0, timeout=10)
        assert await nodes[1].is_revoked("user-1")


async def test_a_storm_of_closes_while_the_broker_refuses_some_all_arrive() -> None:
    async with cluster(2) as nodes:
        remotes = [RecordingConnection() for _ in range(200)]
        for index, connection in enumerate(remotes):
            await nodes[1].register(connection, f"session-{index}")
        nodes.transport(0).refuse(40)
        for index in range(200):
            await nodes[0].close_all(f"session-{index}")
        await wait_for(lambda: all(connection.close_code == 1000 for connection in remotes), timeout=15)
        assert nodes[0].stats()["outbox"] == 0


async def test_revocations_survive_a_broker_that_lost_its_data() -> None:
    """Node 1 never held the key, so only node 0 knows of the revocation once the
    broker forgot it: node 0 writes it again, and node 1 refuses the key."""
    async with cluster(2) as nodes:
        await nodes[0].revoke("user-1", ttl=600)
        await nodes[0].revoke("user-2", ttl=600)
        nodes.hub.lose_data()
        await wait_for(lambda: all(node.stats()["reconciles"] == 1 and node.healthy for node in nodes.nodes))
        for key in ("user-1", "user-2"):
            assert await nodes[1].is_revoked(key)
            probe = RecordingConnection()
            await nodes[1].register(probe, key)
            await wait_for(lambda probe=probe: probe.close_code == 4401)  # type: ignore[misc]
        assert not await nodes[1].is_revoked("user-3")


async def test_a_registration_racing_the_reassertion_is_closed_when_it_arrives() -> None:
    """A node that registers a revoked key before the node that remembers it has
    written it again is told by the re-asserted revoke's message."""
    async with cluster(2) as nodes:
        await nodes[0].revoke("user-1", ttl=600)
        nodes.transport(0).cut()
        nodes.hub.lose_data()
        await wait_for(lambda: nodes[1].stats()["reconciles"] == 1 and nodes[1].healthy)
        early = RecordingConnection()
        await nodes[1].register(early, "user-1")  # nobody has told the broker yet
        assert early.close_code is None
        nodes.transport(0).restore()
        await wait_for(lambda: early.close_code == 4401, timeout=10)


async def test_commands_of_a_new_broker_epoch_are_not_taken_for_replays() -> None:
    """After a data loss the sequence restarts; a command of the new epoch that
    arrives before this node has reconciled is still applied."""
    async with cluster(2) as nodes:
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        for round_ in range(5):  # push node 0's window far up in the old epoch
            await nodes[0].send_all("session-a", f"old {round_}")
        await wait_for(lambda: len(connection.sent) == 5)
        hub_identity = nodes.hub.identity
        nodes.hub.lose_data()
        assert nodes.hub.identity != hub_identity
        key_hash = nodes[1].names.key_hash("session-a")
        fresh = Command("send", "node0", sequence=1, data="new epoch", key=key_hash, epoch=nodes.hub.identity)
        nodes[1].message_received(nodes[1].names.channel(key_hash), WireCodec().encode(fresh))
        assert "replayed" not in nodes[1].stats()["dropped_by_reason"]


async def test_a_node_that_falls_silent_leaves_the_membership_once_with_an_event() -> None:
    events: list[Event] = []
    async with cluster(3, on_event=events.append) as nodes:
        nodes.transport(2).cut()
        await wait_for(lambda: "node2" not in nodes[0].live_nodes(), timeout=5)
        await nodes[0].count("anything", timeout=0.2)  # reads the membership too
        await wait_for(
            lambda: any(e.name == "member_left" and e.detail.get("node") == "node2" for e in events)
        )
        await settle(0.5)
        left = [
            event for event in events if event.name == "member_left" and event.detail.get("node") == "node2"
        ]
        assert len(left) == 2  # once on node 0, once on node 1
        nodes.transport(2).restore()
        await wait_for(lambda: "node2" in nodes[0].live_nodes())
        joined = [e for e in events if e.name == "member_joined" and e.detail.get("node") == "node2"]
        assert len(joined) >= 2


async def test_a_confirmed_close_is_not_complete_while_a_silent_node_may_hold_sockets() -> None:
    """A node paused past its heartbeats is out of the live membership, but it may
    still hold the key's sockets: it is reported missing, not forgotten."""
    async with cluster(3) as nodes:
        held = RecordingConnection()
        await nodes[2].register(held, "session-a")
        nodes.transport(2).cut()
        await wait_for(lambda: "node2" not in nodes[0].live_nodes(), timeout=5)
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.3)
        assert not report.complete
        assert report.missing == frozenset({"node2"})
        assert type(report.missing) is frozenset
        _, complete = await nodes[0].count("session-a", timeout=0.3)
        assert not complete
        nodes.transport(2).restore()
        await wait_for(lambda: held.close_code == 1000, timeout=5)  # reconciled from the marker


async def test_a_node_that_starts_after_another_fell_silent_still_expects_it() -> None:
    """The newcomer never heard the silent node's heartbeats; the answers to its hello
    name it, so a confirmed close reports it missing instead of complete."""
    async with cluster(3) as nodes:
        held = RecordingConnection()
        await nodes[2].register(held, "session-a")
        nodes.transport(2).cut()
        await wait_for(lambda: "node2" not in nodes[0].live_nodes(), timeout=5)
        async with SessionRegistry(MemoryTransport(nodes.hub), node_id="late", **FAST) as late:
            report = await late.close_all("session-a", confirm=True, timeout=0.3)
            assert not report.complete
            assert report.missing == frozenset({"node2"})
        nodes.transport(2).restore()
        await wait_for(lambda: held.close_code == 1000, timeout=5)


async def test_a_node_back_from_a_cut_expects_the_nodes_that_fell_silent_meanwhile() -> None:
    """While node 0 was cut off, another node came, took a socket and fell silent: node 0
    never heard it. Back, it learns it from node 1's answer to its hello."""
    async with cluster(2) as nodes:
        nodes.transport(0).cut()
        await wait_for(lambda: not nodes[0].healthy)
        transport = MemoryTransport(nodes.hub)
        async with SessionRegistry(transport, node_id="brief", **FAST) as brief:
            held = RecordingConnection()
            await brief.register(held, "session-a")
            await wait_for(lambda: "brief" in nodes[1].live_nodes())
            transport.cut()
            await wait_for(lambda: "brief" not in nodes[1].live_nodes(), timeout=5)
            nodes.transport(0).restore()
            await wait_for(lambda: nodes[0].healthy, timeout=5)
            report = await nodes[0].close_all("session-a", confirm=True, timeout=0.3)
            assert not report.complete
            assert "brief" in report.missing
            _, complete = await nodes[0].count("session-a", timeout=0.3)
            assert not complete


async def test_a_nodes_own_outage_does_not_count_as_the_silence_of_others() -> None:
    """Node 1 holds a socket and falls silent; then node 0 is cut off for longer than the
    silence window (0.6 s). Node 0 heard nothing meanwhile, from anyone: back, it still
    expects node 1 for the rest of its window."""
    async with cluster(2, heartbeat_interval=0.02) as nodes:
        held = RecordingConnection()
        await nodes[1].register(held, "session-a")
        nodes.transport(1).cut()
        await wait_for(lambda: "node1" not in nodes[0].live_nodes(), timeout=5)
        nodes.transport(0).cut()
        await settle(1.0)
        nodes.transport(0).restore()
        await wait_for(lambda: nodes[0].healthy, timeout=5)
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.2)
        assert not report.complete
        assert report.missing == frozenset({"node1"})
        nodes.transport(1).restore()
        await wait_for(lambda: held.close_code == 1000, timeout=5)


async def test_a_paused_process_does_not_count_its_pause_as_the_silence_of_others() -> None:
    """The whole process stops for longer than the silence window (SIGSTOP, a long GC, a
    starved loop; here a blocking sleep): a node that was silent before still counts."""
    events: list[Event] = []
    async with cluster(2, heartbeat_interval=0.02, on_event=events.append) as nodes:
        await nodes[1].register(RecordingConnection(), "session-a")
        nodes.transport(1).cut()
        await wait_for(
            lambda: any(e.name == "member_left" and e.detail.get("node") == "node1" for e in events)
        )
        time.sleep(1.0)  # noqa: ASYNC251 - the pause under test
        await settle(0.1)
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.2)
        assert not report.complete
        assert report.missing == frozenset({"node1"})


async def test_a_heartbeat_with_a_malformed_silent_list_counts_and_is_dropped() -> None:
    async with cluster(2) as nodes:
        for data in ("not json", '["a"]', '{"a": "soon"}', '{"a.b": 1}', '{"a": NaN}'):
            beat = Command("beat", "node1", interval=0.05, data=data)
            nodes[0].message_received(nodes[0].names.control, WireCodec().encode(beat))
        assert nodes[0].stats()["dropped_by_reason"]["malformed"] >= 5
        assert "node1" in nodes[0].live_nodes()  # the beat itself still counts
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.3)
        assert report.complete


async def test_a_silent_node_is_forgotten_after_its_window() -> None:
    async with cluster(3, heartbeat_interval=0.02) as nodes:
        nodes.transport(2).cut()
        # 30 heartbeat intervals of 0.02 s: the window is 0.6 s.
        await wait_for(lambda: "node2" not in nodes[0].live_nodes(), timeout=5)
        await settle(1.0)
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.3)
        assert report.complete
        assert report.missing == frozenset()


async def test_the_memory_hub_helpers_hold() -> None:
    """The fault injection used above does what it says on the memory hub."""
    hub = MemoryHub()
    async with SessionRegistry(MemoryTransport(hub), **FAST) as node:
        transport = node.transport
        assert isinstance(transport, MemoryTransport)
        transport.refuse(1)
        report = await node.close_all("k")
        assert report.queued and transport.connected
        await wait_for(lambda: node.stats()["outbox"] == 0)


class _FailsMarkerReads(MemoryTransport):
    """A broker connection whose next marker reads fail (a broker still electing)."""

    fail_reads = 0
    reads = 0

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise TransportError("the broker refused the read (fault injection)")
        return await super().read_markers(keys)


async def test_revocations_are_reasserted_even_when_the_first_try_fails() -> None:
    hub = MemoryHub()
    flaky = _FailsMarkerReads(hub)
    async with (
        SessionRegistry(flaky, node_id="a", **FAST) as remembers,
        SessionRegistry(MemoryTransport(hub), node_id="b", **FAST) as other,
    ):
        await remembers.revoke("user-1", ttl=600)
        flaky.fail_reads = 1
        hub.lose_data()
        await wait_for(lambda: remembers.healthy and remembers.stats()["reconciles"] == 1, timeout=10)
        await wait_for(lambda: other.healthy and other.stats()["reconciles"] == 1, timeout=10)
        assert await other.is_revoked("user-1")


async def test_is_revoked_of_a_key_this_node_holds_asks_no_broker_and_still_sees_revokes() -> None:
    hub = MemoryHub()
    counting = _FailsMarkerReads(hub)
    async with (
        SessionRegistry(counting, node_id="a", **FAST) as holder,
        SessionRegistry(MemoryTransport(hub), node_id="b", **FAST) as other,
    ):
        await holder.register(RecordingConnection(), "session-1")
        before = counting.reads
        for _ in range(20):
            assert not await holder.is_revoked("session-1")  # a second tab's check
        assert counting.reads == before
        await other.revoke("session-1")
        await wait_for(lambda: holder.local_count("session-1") == 0)
        assert await holder.is_revoked("session-1")
        assert not await holder.is_revoked("not-held")
        assert counting.reads == before + 1  # only the key it does not hold
