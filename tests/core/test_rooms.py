"""Keys that change on a registered socket (rooms, in-band login) and per-socket data."""

from __future__ import annotations

import anyio
import pytest

from sessionws import Handle, KeyRevokedError, MemoryHub, MemoryTransport, SessionRegistry
from tests._helpers import FAST, wait_for
from tests.core.helpers import RecordingConnection, cluster, settle

pytestmark = pytest.mark.anyio


def data_of(handle: Handle) -> object:
    return handle.data


async def test_data_is_kept_replaced_and_forgotten_with_the_socket() -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        source = {"name": "ada", "tags": ["a", "b"]}
        handle = await node.register(RecordingConnection(), "s1", data=source)
        source["name"] = "changed later"
        assert handle.data == {"name": "ada", "tags": ["a", "b"]}
        await node.set_data(handle, {"name": "grace"})
        assert handle.data == {"name": "grace"}
        await node.set_data(handle, None)
        assert data_of(handle) is None
        other = await node.register(RecordingConnection(), "s1")  # the short path
        assert other.data is None
        await node.set_data(other, {"n": 1})
        await node.unregister(other)
        assert other.data is None
        assert not type(other).data_table


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("not a mapping", TypeError),
        ({1: "int key"}, TypeError),
        ({"set": {1, 2}}, TypeError),
        ({"nan": float("nan")}, TypeError),
        ({"big": "x" * 5000}, ValueError),
    ],
)
async def test_bad_data_is_refused_and_registers_nothing(data: object, error: type[Exception]) -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        with pytest.raises(error):
            await node.register(RecordingConnection(), "s1", data=data)  # type: ignore[arg-type]
        assert node.stats()["sockets"] == 0
        handle = await node.register(RecordingConnection(), "s1")
        with pytest.raises(error):
            await node.set_data(handle, data)  # type: ignore[arg-type]
        assert handle.data is None


async def test_an_added_key_reaches_the_socket_from_every_node_and_a_removed_one_no_longer() -> None:
    async with cluster(3) as nodes:
        connection = RecordingConnection()
        handle = await nodes[1].register(connection, "session-1")
        await nodes[1].add_keys(handle, ["room-1", "user-7"])
        await nodes[1].add_keys(handle, "room-1")  # idempotent
        assert list(handle.keys) == ["session-1", "room-1", "user-7"]
        await nodes[0].send_all("room-1", "to the room")
        await wait_for(lambda: connection.sent == ["to the room"])
        await nodes[1].remove_keys(handle, "room-1")
        await nodes[1].remove_keys(handle, ["room-1"])  # idempotent
        assert list(handle.keys) == ["session-1", "user-7"]
        await nodes[2].send_all("room-1", "not for you any more")
        await nodes[2].close_all("room-1")
        await settle(0.2)
        assert connection.sent == ["to the room"]
        assert connection.close_code is None
        await nodes[2].close_all("user-7", reason="logged out")
        await wait_for(lambda: connection.close_reason == "logged out")


async def test_the_first_key_cannot_be_removed() -> None:
    async with cluster(1) as nodes:
        handle = await nodes[0].register(RecordingConnection(), ["session-1", "room"])
        with pytest.raises(ValueError, match="first key"):
            await nodes[0].remove_keys(handle, ["room", "session-1"])
        assert list(handle.keys) == ["session-1", "room"]


async def test_a_revoked_key_cannot_be_added() -> None:
    async with cluster(2) as nodes:
        await nodes[0].revoke("user-9")
        handle = await nodes[1].register(RecordingConnection(), "session-1")
        with pytest.raises(KeyRevokedError):
            await nodes[1].add_keys(handle, ["room-1", "user-9"])
        assert list(handle.keys) == ["session-1"]
        assert not handle.closing


async def test_a_close_of_the_key_before_the_add_does_not_close_the_socket() -> None:
    async with cluster(2) as nodes:
        await nodes[1].register(RecordingConnection(), "room-1")  # node 1 holds the room
        await nodes[0].close_all("room-1")  # long before the add
        await settle(0.1)
        connection = RecordingConnection()
        handle = await nodes[1].register(connection, "session-1")
        await nodes[1].add_keys(handle, "room-1")
        other = RecordingConnection()
        handle2 = await nodes[0].register(other, "session-2")
        await nodes[0].add_keys(handle2, "room-1")  # a node that learns the room's marker now
        await settle(0.2)
        assert connection.close_code is None and other.close_code is None
        await nodes[0].close_all("room-1", reason="after")
        await wait_for(lambda: connection.close_reason == "after" and other.close_reason == "after")


async def test_a_close_racing_the_add_closes_the_socket() -> None:
    """On a broker that spreads interest late (a NATS cluster), a close published
    while the added key's subscription is not yet everywhere is found by the second
    marker read, as for a registration."""
    hub = MemoryHub()
    async with (
        SessionRegistry(MemoryTransport(hub), node_id="a", **FAST) as closer,
        SessionRegistry(MemoryTransport(hub, interest_delay=0.2), node_id="b", **FAST) as holder,
    ):
        connection = RecordingConnection()
        handle = await holder.register(connection, "session-1")
        await holder.add_keys(handle, "room-1")  # subscribed, but the hub learns it late
        await closer.close_all("room-1", reason="raced")  # the message misses node b
        await wait_for(lambda: connection.close_reason == "raced")


async def test_keys_of_a_closed_or_foreign_handle_cannot_change() -> None:
    async with cluster(2) as nodes:
        handle = await nodes[0].register(RecordingConnection(), "session-1")
        with pytest.raises(TypeError):
            await nodes[1].add_keys(handle, "room")
        await nodes[0].unregister(handle)
        with pytest.raises(ValueError, match="closed"):
            await nodes[0].add_keys(handle, "room")
        with pytest.raises(ValueError, match="closed"):
            await nodes[0].set_data(handle, {})


async def test_a_socket_holds_at_most_256_keys_at_registration_and_after_adds() -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        too_many = [f"key-{index}" for index in range(257)]
        with pytest.raises(ValueError, match="at most 256 keys"):
            await node.register(RecordingConnection(), too_many)
        assert node.stats()["sockets"] == 0 and node.stats()["keys"] == 0
        # Repeats count once, as the keys a socket holds do.
        handle = await node.register(RecordingConnection(), [*too_many[:255], *too_many[:255]])
        assert len(handle.keys) == 255
        await node.add_keys(handle, [too_many[0], "room-1"])  # already held + one: 256
        with pytest.raises(ValueError, match=r"at most 256 keys.*would hold 257"):
            await node.add_keys(handle, "room-2")
        assert len(handle.keys) == 256 and "room-2" not in handle.keys
        await node.add_keys(handle, "room-1")  # idempotent at the cap
        await node.remove_keys(handle, "room-1")
        await node.add_keys(handle, "room-2")
        assert len(handle.keys) == 256 and not handle.closing


async def test_adds_racing_past_the_key_cap_add_only_what_fits() -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        handle = await node.register(RecordingConnection(), [f"key-{index}" for index in range(255)])
        refused: list[ValueError] = []

        async def add(key: str) -> None:
            try:
                await node.add_keys(handle, key)
            except ValueError as error:
                refused.append(error)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(add, "room-a")
            tasks.start_soon(add, "room-b")
        assert len(refused) == 1 and "at most 256 keys" in str(refused[0])
        assert len(handle.keys) == 256


async def test_nothing_is_left_after_sockets_with_added_keys_leave() -> None:
    async with cluster(2) as nodes:
        handles = []
        for index in range(5):
            handle = await nodes[1].register(RecordingConnection(), f"session-{index}")
            await nodes[1].add_keys(handle, ["room-a", f"room-{index}"])
            handles.append(handle)
        await nodes[1].remove_keys(handles[0], "room-a")
        for handle in handles:
            await nodes[1].unregister(handle)
        await wait_for(lambda: nodes[1].stats()["subscriptions"] == 0)
        assert nodes[1].stats()["keys"] == 0
        assert all(state.added in (None, {}) for state in nodes[1]._table.by_key.values())


async def test_broadcast_reaches_every_socket_of_every_node_but_the_excluded() -> None:
    async with cluster(3) as nodes:
        connections = [RecordingConnection(f"c{index}") for index in range(6)]
        handles = [
            await nodes[index % 3].register(conn, f"s{index}") for index, conn in enumerate(connections)
        ]
        report = await nodes[0].broadcast("hello all", exclude=handles[3])
        assert report.sent_here == 1 and not report.queued  # node 0 holds sockets 0 and 3; 3 is spared
        await wait_for(lambda: all(c.sent == ["hello all"] for i, c in enumerate(connections) if i != 3))
        await settle(0.1)
        assert connections[3].sent == []


async def test_send_to_and_close_handle_reach_one_socket_anywhere_and_say_if_found() -> None:
    async with cluster(3) as nodes:
        target, neighbour = RecordingConnection(), RecordingConnection()
        handle = await nodes[2].register(target, "session-1")
        await nodes[2].register(neighbour, "session-1")
        report = await nodes[0].send_to(handle.id, "just you")
        assert report.found and report.complete and report.node == "node2"
        await wait_for(lambda: target.sent == ["just you"])
        assert neighbour.sent == []
        assert (await nodes[2].send_to(handle.id, "local")).found
        gone = await nodes[0].send_to("node2.99999", "nobody")
        assert not gone.found and gone.complete
        absent_node = await nodes[0].send_to("nosuchnode.1", "nobody", timeout=0.2)
        assert not absent_node.found and not absent_node.complete
        closed = await nodes[1].close_handle(handle.id, code=4000, reason="kicked")
        assert closed.found
        await wait_for(lambda: target.close_code == 4000 and target.close_reason == "kicked")
        assert neighbour.close_code is None
        with pytest.raises(ValueError, match="handle id"):
            await nodes[0].send_to("not-a-handle-id", "x")
        with pytest.raises(ValueError, match="1005"):
            await nodes[0].close_handle(handle.id, code=1005)


async def test_confirmed_send_all_says_how_many_sockets_each_node_queued_it_for() -> None:
    async with cluster(3) as nodes:
        for index, count in enumerate((1, 2, 0)):
            for _ in range(count):
                await nodes[index].register(RecordingConnection(), "room")
        report = await nodes[0].send_all("room", "hi", confirm=True)
        assert report.confirmed and report.complete
        assert report.sent_here == 1 and dict(report.nodes) == {"node1": 2, "node2": 0}
        assert report.total == 3
        unconfirmed = await nodes[0].send_all("room", "hi again")
        assert not unconfirmed.confirmed and unconfirmed.sent_here == 1


async def test_members_lists_every_socket_of_a_key_with_its_keys_and_data() -> None:
    async with cluster(3) as nodes:
        await nodes[0].register(RecordingConnection(), ["s-ada", "room"], data={"name": "ada"})
        bob = await nodes[1].register(RecordingConnection(), "s-bob", data={"name": "bob"})
        await nodes[1].add_keys(bob, "room")
        await nodes[2].register(RecordingConnection(), "s-eve")
        listing = await nodes[2].members("room")
        assert listing.complete and not listing.truncated and len(listing) == 2
        seen = {(m.node, m.keys, m.data["name"] if m.data else None) for m in listing.members}
        assert seen == {("node0", ("s-ada", "room"), "ada"), ("node1", ("s-bob", "room"), "bob")}
        for _ in range(4):
            await nodes[1].register(RecordingConnection(), "room")
        limited = await nodes[0].members("room", limit=2)
        assert limited.truncated and len(limited) == 3  # node 0's one, and two of node 1's five
        nodes.transport(2).cut()
        partial = await nodes[0].members("room", timeout=0.3)
        assert not partial.complete and partial.missing == frozenset({"node2"})
        with pytest.raises(ValueError, match="limit"):
            await nodes[0].members("room", limit=0)
