"""The registry contract over three registries on one in-process hub.

Each test names the contract line (DESIGN.md, "Registry contract") it proves.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from sessionws import (
    CLOSE_REVOKED,
    CLOSE_SHUTDOWN,
    CLOSE_UNKNOWN_STATE,
    BrokerUnavailableError,
    Handle,
    MemoryHub,
    MemoryTransport,
    NotConfiguredError,
    SessionRegistry,
)
from tests._helpers import wait_for
from tests.core.helpers import RecordingConnection, cluster, settle

pytestmark = pytest.mark.anyio


async def test_close_on_one_node_reaches_the_others_and_spares_other_keys() -> None:
    """1. Cluster-wide close; other keys untouched."""
    async with cluster(3) as nodes:
        mine = [RecordingConnection(f"mine{i}") for i in range(3)]
        other = [RecordingConnection(f"other{i}") for i in range(3)]
        for index in range(3):
            await nodes[index].register(mine[index], "session-a")
            await nodes[index].register(other[index], "session-b")
        report = await nodes[0].close_all("session-a")
        assert report.closed_here == 1
        await wait_for(lambda: all(c.close_code == 1000 for c in mine))
        await settle()
        assert all(c.close_code is None for c in other)
        assert [node.local_count("session-a") for node in nodes.nodes] == [0, 0, 0]
        assert [node.local_count("session-b") for node in nodes.nodes] == [1, 1, 1]


async def test_exclude_spares_the_callers_socket_on_every_node() -> None:
    """1. ``exclude=handle`` ("log out my other devices"); handles are cluster-unique."""
    async with cluster(3) as nodes:
        connections = [RecordingConnection(f"c{i}") for i in range(3)]
        handles = [await nodes[i].register(connections[i], ["session-a", "user-1"]) for i in range(3)]
        assert len({handle.id for handle in handles}) == 3
        await nodes[1].close_all("user-1", exclude=handles[2])
        await wait_for(lambda: connections[0].closed.is_set() and connections[1].closed.is_set())
        await settle()
        assert connections[2].close_code is None
        assert nodes[2].local_count("user-1") == 1


async def test_close_by_user_key_reaches_every_session_of_that_user() -> None:
    """Several keys per connection: a user key spans sessions."""
    async with cluster(3) as nodes:
        laptop, phone, stranger = RecordingConnection(), RecordingConnection(), RecordingConnection()
        await nodes[0].register(laptop, ["session-laptop", "user-7"])
        await nodes[2].register(phone, ["session-phone", "user-7"])
        await nodes[1].register(stranger, ["session-x", "user-8"])
        await nodes[1].close_all("user-7", code=4000, reason="password changed")
        await wait_for(lambda: laptop.close_code == 4000 and phone.close_code == 4000)
        assert phone.close_reason == "password changed"
        await settle()
        assert stranger.close_code is None


async def test_channels_are_subscribed_only_where_the_key_lives_and_released_after_linger() -> None:
    """1. A channel per key, subscribed on a node's first socket and dropped after the linger."""
    async with cluster(3, linger=0.2) as nodes:
        connection = RecordingConnection()
        handle = await nodes[0].register(connection, "session-a")
        channel = nodes[0].names.channel(nodes[0].names.key_hash("session-a"))
        assert nodes.hub.receivers(channel) == 1
        assert "session-a" not in channel
        await nodes[0].unregister(handle)
        # Page navigation: a new socket within the linger reuses the subscription.
        again = await nodes[0].register(RecordingConnection(), "session-a")
        await anyio.sleep(0.3)
        assert nodes.hub.receivers(channel) == 1
        await nodes[0].unregister(again)
        await wait_for(lambda: nodes.hub.receivers(channel) == 0)
        assert nodes[0].stats()["subscriptions"] == 0


async def test_confirmed_close_reports_every_node_and_socket() -> None:
    """3. Confirmed close: every live node answers, 0 is an answer."""
    async with cluster(3) as nodes:
        for index, sockets in enumerate((2, 3, 0)):
            for _ in range(sockets):
                await nodes[index].register(RecordingConnection(), "session-a")
        report = await nodes[0].close_all("session-a", confirm=True)
        assert report.confirmed and report.complete
        assert report.closed_here == 2
        assert dict(report.nodes) == {"node1": 3, "node2": 0}
        assert report.total == 5
        assert report.missing == frozenset()


async def test_confirmed_close_is_incomplete_when_a_node_is_cut_off() -> None:
    """3. ``complete=False`` when a live node cannot answer."""
    async with cluster(3) as nodes:
        await nodes[2].register(RecordingConnection(), "session-a")
        nodes.transport(2).cut()
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.3)
        assert report.confirmed and not report.complete
        assert report.missing == frozenset({"node2"})
        assert dict(report.nodes) == {"node1": 0}


async def test_count_is_cluster_wide_and_says_when_it_is_incomplete() -> None:
    """3. ``count`` asks every live node."""
    async with cluster(3) as nodes:
        for index, sockets in enumerate((1, 2, 3)):
            for _ in range(sockets):
                await nodes[index].register(RecordingConnection(), "session-a")
        assert await nodes[1].count("session-a") == (6, True)
        assert await nodes[1].count("nobody") == (0, True)
        nodes.transport(2).cut()
        total, complete = await nodes[0].count("session-a", timeout=0.3)
        assert (total, complete) == (3, False)


async def test_revoke_closes_everywhere_and_refuses_the_key_afterwards() -> None:
    """4, 7. Revoke closes with 4401 and the key may not register again."""
    async with cluster(3) as nodes:
        connections = [RecordingConnection() for _ in range(3)]
        for index in range(3):
            await nodes[index].register(connections[index], "session-a")
        await nodes[0].revoke("session-a", ttl=60)
        await wait_for(lambda: all(c.close_code == CLOSE_REVOKED for c in connections))
        for index in range(3):
            assert await nodes[index].is_revoked("session-a")
            assert not await nodes[index].is_revoked("session-b")
        late = RecordingConnection()
        handle = await nodes[2].register(late, "session-a")
        assert handle.closing
        await wait_for(lambda: late.close_code == CLOSE_REVOKED)


async def test_revoke_expires_after_its_ttl() -> None:
    async with cluster(2) as nodes:
        await nodes[0].revoke("session-a", ttl=1.0)
        assert await nodes[1].is_revoked("session-a")
        await anyio.sleep(1.1)
        assert not await nodes[1].is_revoked("session-a")
        connection = RecordingConnection()
        handle = await nodes[1].register(connection, "session-a")
        assert not handle.closing


async def test_a_registration_racing_a_revoke_on_another_node_ends_closed() -> None:
    """4. No register-after-close race: whichever order the broker sees, the socket closes."""
    for delay in (0.0, 0.0005, 0.001, 0.002, 0.005):
        async with cluster(3) as nodes:
            connection = RecordingConnection()

            async def register_soon(
                delay: float = delay, connection: RecordingConnection = connection
            ) -> None:
                await anyio.sleep(delay)
                await nodes[2].register(connection, "session-a")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(register_soon)
                await nodes[0].revoke("session-a")
            await wait_for(lambda connection=connection: connection.close_code == CLOSE_REVOKED)  # type: ignore[misc]
            assert nodes[2].local_count("session-a") == 0


async def test_a_registration_racing_a_close_is_closed_exactly_when_the_close_is_newer() -> None:
    """4. Closes and registrations are ordered by the namespace sequence, never by luck.

    A registration takes effect at the sequence read when it starts subscribing; a
    close with a newer sequence always reaches it (by message or by marker), an older
    one never does. Run the race at many offsets: both outcomes occur, and each one
    matches the sequences.
    """
    outcomes: set[bool] = set()
    for delay in (0.0, 0.0001, 0.0002, 0.0003, 0.0004, 0.0006, 0.001, 0.002):
        async with cluster(2) as nodes:
            connection = RecordingConnection()
            handles: list[Handle] = []

            async def register(
                connection: RecordingConnection = connection, handles: list[Handle] = handles
            ) -> None:
                handles.append(await nodes[1].register(connection, "session-a"))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(register)
                for _ in range(int(delay * 10_000)):
                    await anyio.lowlevel.checkpoint()
                await nodes[0].close_all("session-a")
            marker = nodes.hub._read(nodes[0].names.close_marker(nodes[0].names.key_hash("session-a")))
            assert marker is not None
            should_close = marker.sequence > handles[0].registration_sequence
            if should_close:
                await wait_for(lambda connection=connection: connection.close_code == 1000)  # type: ignore[misc]
            else:
                await settle()
                assert connection.close_code is None
            outcomes.add(should_close)
    assert outcomes == {True, False}


async def test_a_registration_on_the_closing_node_is_ordered_by_sequence_too() -> None:
    """4. On the node that issues the close as well: a socket registered while the broker
    takes the close's sequence registered at an older one, and is closed."""
    async with cluster(2) as nodes:
        keeper = RecordingConnection("keeper")
        await nodes[0].register(keeper, "session-a")  # the key stays held: the short path
        connection = RecordingConnection()
        handles: list[Handle] = []
        transport = nodes[0].transport
        assert isinstance(transport, MemoryTransport)
        take_sequence = transport.mark_and_publish_numbered

        async def numbered(*arguments: Any) -> tuple[int, int | None]:
            handles.append(await nodes[0].register(connection, "session-a"))  # in flight
            return await take_sequence(*arguments)

        transport.mark_and_publish_numbered = numbered  # type: ignore[method-assign,assignment]
        await nodes[0].close_all("session-a")
        marker = nodes.hub._read(nodes[0].names.close_marker(nodes[0].names.key_hash("session-a")))
        assert marker is not None and marker.sequence > handles[0].registration_sequence
        await wait_for(lambda: connection.close_code == 1000 and keeper.close_code == 1000)
        late = RecordingConnection()
        await nodes[0].register(late, "session-a")  # after: the close is older
        await settle()
        assert late.close_code is None


async def test_a_close_older_than_a_registration_does_not_close_it() -> None:
    """4. Sequences order closes and registrations: a socket registered after a close survives it."""
    async with cluster(2) as nodes:
        await nodes[0].close_all("session-a")
        await settle()
        connection = RecordingConnection()
        handle = await nodes[1].register(connection, "session-a")
        await settle()
        assert not handle.closing
        assert connection.close_code is None


async def test_a_node_cut_off_during_a_close_closes_its_sockets_on_reconnect() -> None:
    """5. Reconcile after a lost broker connection, by sequences."""
    async with cluster(3) as nodes:
        victim, survivor = RecordingConnection("victim"), RecordingConnection("survivor")
        await nodes[2].register(victim, "session-a")
        await nodes[2].register(survivor, "session-b")
        nodes.transport(2).cut()
        await nodes[0].close_all("session-a", code=4000)
        await settle(0.1)
        assert victim.close_code is None  # the message was lost with the connection
        nodes.transport(2).restore()
        await wait_for(lambda: victim.close_code == 4000)
        await settle()
        assert survivor.close_code is None
        assert nodes[2].stats()["reconciles"] == 1
        assert nodes[2].healthy


async def test_a_revoke_missed_during_an_outage_is_applied_on_reconnect() -> None:
    async with cluster(2) as nodes:
        victim = RecordingConnection()
        await nodes[1].register(victim, "session-a")
        nodes.transport(1).cut()
        await nodes[0].revoke("session-a")
        nodes.transport(1).restore()
        await wait_for(lambda: victim.close_code == CLOSE_REVOKED)
        assert await nodes[1].is_revoked("session-a")


async def test_a_close_issued_while_cut_off_is_delivered_from_the_outbox() -> None:
    """5. Outbox: local sockets close at once; the remote part is sent on reconnect."""
    async with cluster(3) as nodes:
        local, remote = RecordingConnection("local"), RecordingConnection("remote")
        await nodes[0].register(local, "session-a")
        await nodes[1].register(remote, "session-a")
        nodes.transport(0).cut()
        await settle()
        assert not nodes[0].healthy
        report = await nodes[0].close_all("session-a")
        assert report.queued and report.closed_here == 1
        await wait_for(lambda: local.close_code == 1000)
        assert nodes[0].stats()["outbox"] == 1
        await settle(0.1)
        assert remote.close_code is None
        nodes.transport(0).restore()
        await wait_for(lambda: remote.close_code == 1000)
        assert nodes[0].stats()["outbox"] == 0
        assert nodes[0].stats()["outbox_sent"] == 1


async def test_strict_close_while_cut_off_raises_broker_unavailable() -> None:
    """5. ``strict=True`` raises instead of queueing (local sockets are closed anyway)."""
    async with cluster(2) as nodes:
        local, remote = RecordingConnection(), RecordingConnection()
        await nodes[0].register(local, "session-a")
        await nodes[1].register(remote, "session-a")
        nodes.transport(0).cut()
        await settle()
        with pytest.raises(BrokerUnavailableError, match="other nodes were not reached"):
            await nodes[0].close_all("session-a", strict=True)
        await wait_for(lambda: local.close_code == 1000)
        assert nodes[0].stats()["outbox"] == 0
        nodes.transport(0).restore()
        await settle(0.1)
        assert remote.close_code is None


async def test_a_full_outbox_raises_instead_of_dropping() -> None:
    async with cluster(2, outbox_size=2) as nodes:
        nodes.transport(0).cut()
        await settle()
        await nodes[0].close_all("a")
        await nodes[0].send_all("b", "hello")
        with pytest.raises(BrokerUnavailableError, match="outbox is full"):
            await nodes[0].close_all("c")


async def test_hub_data_loss_closes_sockets_with_1012() -> None:
    """5. The broker lost its data (new identity): the node cannot know what it missed."""
    async with cluster(3) as nodes:
        connections = [RecordingConnection() for _ in range(3)]
        for index in range(3):
            await nodes[index].register(connections[index], f"session-{index}")
        nodes.hub.lose_data()
        await wait_for(lambda: all(c.close_code == CLOSE_UNKNOWN_STATE for c in connections))
        assert sum(int(node.stats()["closed_unknown_state"]) for node in nodes.nodes) == 3
        # The cluster works again afterwards.
        again = RecordingConnection()
        await nodes[1].register(again, "session-x")
        await nodes[0].close_all("session-x")
        await wait_for(lambda: again.close_code == 1000)


async def test_an_outage_longer_than_the_marker_ttl_closes_with_1012() -> None:
    async with cluster(2, marker_ttl=0.2) as nodes:
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        nodes.transport(1).cut()
        await anyio.sleep(0.3)
        nodes.transport(1).restore()
        await wait_for(lambda: connection.close_code == CLOSE_UNKNOWN_STATE)


async def test_send_all_reaches_every_node_in_order_and_respects_exclude() -> None:
    """2. Ordered delivery; sends then close arrive in issue order."""
    async with cluster(3) as nodes:
        connections = [RecordingConnection() for _ in range(3)]
        handles = [await nodes[i].register(connections[i], "session-a") for i in range(3)]
        for number in range(20):
            await nodes[0].send_all("session-a", f"m{number}")
        await nodes[0].send_all("session-a", b"\x00binary", exclude=handles[1])
        await nodes[0].close_all("session-a")
        await wait_for(lambda: all(c.closed.is_set() for c in connections))
        expected = [("send", f"m{number}") for number in range(20)]
        assert connections[1].frames == [*expected, ("close", 1000, "")]
        for index in (0, 2):
            assert connections[index].frames == [*expected, ("send", b"\x00binary"), ("close", 1000, "")]


async def test_send_all_rejects_payloads_over_the_broker_limit() -> None:
    hub_limit = 1024
    async with cluster(1) as nodes:
        nodes.transport(0).max_payload = hub_limit
        with pytest.raises(ValueError, match="broker allows 1024"):
            await nodes[0].send_all("session-a", "x" * 2000)
        with pytest.raises(TypeError):
            await nodes[0].send_all("session-a", 12)  # type: ignore[arg-type]


class _CloseThatHangs(RecordingConnection):
    """A client that never completes the close handshake; says when the close began and ended."""

    close_started = close_ended = False

    async def close(self, code: int, reason: str) -> None:
        self.close_started = True
        try:
            await anyio.sleep_forever()
        finally:
            self.close_ended = True


async def test_a_connection_whose_close_hangs_does_not_delay_the_others() -> None:
    """2. The listener never awaits a client."""
    # The stuck close is given up only after close_timeout: everything below must happen
    # while it still hangs, not after it.
    async with cluster(2, close_timeout=60.0) as nodes:
        stuck = _CloseThatHangs("stuck")
        await nodes[1].register(stuck, "session-a")
        quick = [RecordingConnection(f"quick{i}") for i in range(5)]
        for connection in quick:
            await nodes[1].register(connection, "session-a")
        other = RecordingConnection("other")
        await nodes[1].register(other, "session-b")
        await nodes[0].close_all("session-a")
        await wait_for(lambda: all(c.close_code == 1000 for c in quick), timeout=30.0)
        await nodes[0].send_all("session-b", "still flowing")
        await wait_for(lambda: other.sent == ["still flowing"], timeout=30.0)
        assert stuck.close_started and not stuck.close_ended  # still hanging: nobody waited for it


async def test_a_close_that_fails_is_logged_and_the_socket_unregistered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with cluster(1) as nodes:
        vanished = RecordingConnection(fail_on_close=True)
        fine = RecordingConnection()
        await nodes[0].register(vanished, "session-a")
        await nodes[0].register(fine, "session-a")
        await nodes[0].close_all("session-a")
        assert nodes[0].local_count("session-a") == 0  # both are closing at once
        # Each close runs on a worker of its own, in no set order: wait for both to finish.
        await wait_for(lambda: nodes[0].stats()["sockets"] == 0 and fine.closed.is_set())
        assert fine.close_code == 1000
        assert "failed" in caplog.text


async def test_overflowing_queue_closes_with_1013() -> None:
    """2. Bounded queue; overflow policy: close with 1013."""
    async with cluster(1, queue_size=4, send_timeout=5.0) as nodes:
        slow = RecordingConnection("slow")
        release = anyio.Event()
        original_send = slow.send

        async def blocked_send(data: str | bytes) -> None:
            await release.wait()
            await original_send(data)

        slow.send = blocked_send  # type: ignore[method-assign]
        await nodes[0].register(slow, "session-a")
        for number in range(10):
            await nodes[0].send_all("session-a", f"m{number}")
        release.set()
        await wait_for(lambda: slow.close_code == 1013)
        assert nodes[0].stats()["overflows"] == 1


async def test_graceful_shutdown_closes_with_1001_and_leaves_the_membership() -> None:
    """6. Shutdown: 1001, unsubscribed, gone from the others' membership."""
    async with cluster(3) as nodes:
        connections = [RecordingConnection() for _ in range(3)]
        for connection in connections:
            await nodes[2].register(connection, ["session-a", "user-1"])
        channel = nodes[2].names.channel(nodes[2].names.key_hash("session-a"))
        await nodes[2].__aexit__(None, None, None)
        assert all(c.close_code == CLOSE_SHUTDOWN for c in connections)
        assert nodes.hub.receivers(channel) == 0
        assert nodes[2].stats()["sockets"] == 0
        await wait_for(lambda: "node2" not in nodes[0].live_nodes())
        report = await nodes[0].close_all("session-a", confirm=True, timeout=0.5)
        assert report.complete and set(report.nodes) == {"node1"}


async def test_a_killed_node_leaves_the_membership_within_a_few_heartbeats() -> None:
    async with cluster(3) as nodes:
        nodes.transport(2).cut()
        await wait_for(lambda: "node2" not in nodes[0].live_nodes(), timeout=1.0)
        assert "node1" in nodes[0].live_nodes()


async def test_fail_closed_refuses_registrations_after_the_grace() -> None:
    """5. Fail-closed policy (off by default)."""
    async with cluster(1, fail_closed_after=0.1) as nodes:
        nodes.transport(0).cut()
        await anyio.sleep(0.15)
        assert not nodes[0].accepting and not nodes[0].healthy
        connection = RecordingConnection()
        handle = await nodes[0].register(connection, "session-a")
        assert handle.closing
        await wait_for(lambda: connection.close_code == CLOSE_UNKNOWN_STATE)
        nodes.transport(0).restore()
        await wait_for(lambda: nodes[0].healthy)
        assert nodes[0].accepting


async def test_fail_closed_is_off_by_default() -> None:
    async with cluster(1) as nodes:
        nodes.transport(0).cut()
        await anyio.sleep(0.1)
        connection = RecordingConnection()
        handle = await nodes[0].register(connection, "session-a")
        assert not handle.closing and nodes[0].accepting


async def test_registration_while_cut_off_subscribes_on_reconnect() -> None:
    async with cluster(2) as nodes:
        nodes.transport(1).cut()
        await settle()
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        nodes.transport(1).restore()
        await wait_for(lambda: nodes[1].healthy)
        await nodes[0].close_all("session-a")
        await wait_for(lambda: connection.close_code == 1000)


async def test_nothing_leaks_after_all_clients_leave() -> None:
    """9. After all clients leave and the linger passes, registry and hub are empty."""
    async with cluster(3) as nodes:
        handles = []
        for index in range(3):
            for number in range(5):
                connection = RecordingConnection()
                handles.append(
                    (index, await nodes[index].register(connection, [f"s{number}", f"u{number % 2}"]))
                )
        for index, handle in handles:
            await nodes[index].unregister(handle)
            await nodes[index].unregister(handle)  # idempotent
        await wait_for(lambda: all(node.stats()["subscriptions"] == 0 for node in nodes.nodes))
        for node in nodes.nodes:
            stats = node.stats()
            assert stats["sockets"] == 0 and stats["keys"] == 0
        key_channels = [ch for ch in nodes.hub._subscribers if ".k." in ch]
        assert key_channels == []


async def test_connection_context_unregisters_on_error_and_cancellation() -> None:
    """9. A socket that errors or is cancelled is unregistered."""
    async with cluster(1) as nodes:
        with pytest.raises(RuntimeError, match="boom"):
            async with nodes[0].connection(RecordingConnection(), "session-a"):
                raise RuntimeError("boom")
        assert nodes[0].local_count("session-a") == 0
        with anyio.move_on_after(0.05):
            async with nodes[0].connection(RecordingConnection(), "session-a"):
                await anyio.sleep_forever()
        assert nodes[0].local_count("session-a") == 0
        assert nodes[0].stats()["sockets"] == 0


async def test_events_and_stats_are_reported() -> None:
    """10. Observable: stats and an event callback."""
    seen: list[str] = []
    async with cluster(2, on_event=lambda event: seen.append(event.name)) as nodes:
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        await nodes[0].close_all("session-a")
        await wait_for(lambda: connection.closed.is_set())
        await settle()
        stats = nodes[1].stats()
        assert stats["commands_received"] >= 1
        assert stats["closed"] == 1
        assert stats["broker"] == "connected"
        assert {"registered", "closed", "unregistered", "member_joined"} <= set(seen)


async def test_a_failing_event_callback_does_not_break_the_registry(caplog: pytest.LogCaptureFixture) -> None:
    def explode(event: object) -> None:
        raise RuntimeError("metrics down")

    async with cluster(1, on_event=explode) as nodes:
        connection = RecordingConnection()
        await nodes[0].register(connection, "session-a")
        await nodes[0].close_all("session-a")
        await wait_for(lambda: connection.closed.is_set())
        assert "on_event callback failed" in caplog.text


async def test_a_single_node_over_memory_is_a_cluster_of_one() -> None:
    async with SessionRegistry("memory://", heartbeat_interval=0.1) as registry:
        connection = RecordingConnection()
        await registry.register(connection, "session-a")
        assert await registry.count("session-a") == (1, True)
        report = await registry.close_all("session-a", confirm=True)
        assert report.complete and report.closed_here == 1 and dict(report.nodes) == {}
        await wait_for(lambda: connection.close_code == 1000)


async def test_a_second_marker_read_closes_the_gap_of_asynchronous_interest() -> None:
    """4. Where interest spreads asynchronously (a NATS cluster), a close published before
    the new subscription reached the broker is found by the read after the grace period."""
    hub = MemoryHub()
    async with (
        SessionRegistry(MemoryTransport(hub), node_id="a", heartbeat_interval=0.1) as node_a,
        SessionRegistry(
            MemoryTransport(hub, interest_delay=0.1), node_id="b", heartbeat_interval=0.1
        ) as node_b,
    ):
        connection = RecordingConnection()
        handle = await node_b.register(connection, "session-a")
        # The subscription is confirmed but not yet effective: the command is lost...
        await node_a.close_all("session-a")
        await settle()
        assert connection.close_code is None
        assert handle.registration_sequence < 1
        # ...and the marker, read again after the grace, closes the socket.
        await wait_for(lambda: connection.close_code == 1000, timeout=2.0)


async def test_without_asynchronous_interest_there_is_no_second_read() -> None:
    async with cluster(1) as nodes:
        assert nodes.transport(0).interest_grace == 0
        assert nodes[0]._interest_grace == 0


async def test_a_publish_only_registry_learns_the_membership_and_is_no_member() -> None:
    """The admin CLI's registry: a roll call fills its membership at once; it holds no
    sockets, answers questions as an observer and never shows up in reports."""
    async with cluster(2, heartbeat_interval=5.0) as nodes:
        await nodes[1].register(RecordingConnection(), "session-a")
        async with SessionRegistry(
            MemoryTransport(nodes.hub), node_id="admin", publish_only=True, heartbeat_interval=5.0
        ) as admin:
            await wait_for(lambda: admin.live_nodes() == {"node0", "node1"}, timeout=1.0)
            with pytest.raises(NotConfiguredError, match="publish-only"):
                await admin.register(RecordingConnection(), "k")
            assert await admin.count("session-a") == (1, True)
            report = await nodes[0].close_all("session-a", confirm=True)
            assert report.complete
            assert dict(report.nodes) == {"node1": 1}
            assert "admin" not in nodes[0].live_nodes()


async def test_a_registration_cancelled_while_subscribing_leaves_nothing_behind() -> None:
    """9. Cancelled during the subscribe round trip: the socket is not left registered."""
    async with cluster(1, interest_grace=0) as nodes:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await nodes[0].register(RecordingConnection(), "session-a")
        assert nodes[0].local_count("session-a") == 0
        assert nodes[0].stats()["sockets"] == 0
        await wait_for(lambda: nodes[0].stats()["subscriptions"] == 0)


async def test_a_broker_that_refuses_commands_after_reconnecting_is_retried() -> None:
    """5. Connected but not ready (a Redis Cluster electing): the reconcile retries."""
    async with cluster(2) as nodes:
        victim = RecordingConnection()
        await nodes[1].register(victim, "session-a")
        nodes.transport(1).cut()
        await nodes[0].close_all("session-a", code=4000)
        nodes.transport(1).refuse(4)
        nodes.transport(1).restore()
        await wait_for(lambda: victim.close_code == 4000)
        await wait_for(lambda: nodes[1].healthy)


async def test_data_loss_with_a_broker_that_refuses_commands_still_closes_with_1012() -> None:
    async with cluster(2) as nodes:
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        nodes.transport(1).refuse(3)
        nodes.hub.lose_data()
        await wait_for(lambda: connection.close_code == CLOSE_UNKNOWN_STATE)
        await wait_for(lambda: nodes[1].healthy)
