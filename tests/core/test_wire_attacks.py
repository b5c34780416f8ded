"""Someone with access to the broker (issue 12): replays on another channel or after a
data loss, payloads built to escape the decoder, sequences built to poison the replay
guard, and floods of bad messages. Each test fails on a registry whose signature did
not bind the key and the epoch, whose decoder was partial, or whose logs were not
rate-limited."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionws import MemoryHub, MemoryTransport, SessionRegistry
from sessionws._markers import encode_marker
from sessionws._wire import MAX_SEQUENCE, Command, WireCodec, WireError
from tests._helpers import FAST, wait_for
from tests.core.helpers import RecordingConnection, settle

pytestmark = pytest.mark.anyio

KEYS = ["a-signing-key-of-32-bytes-000000"]


class Sniffer:
    """A broker client of the attacker's: records what it hears."""

    def __init__(self) -> None:
        self.captured: list[tuple[str, bytes]] = []

    def message_received(self, channel: str, payload: bytes) -> None:
        self.captured.append((channel, payload))

    def connection_lost(self) -> None: ...

    def connection_restored(self) -> None: ...


async def _two_nodes(hub: MemoryHub, **options: Any) -> tuple[SessionRegistry, SessionRegistry]:
    settings_ = {**FAST, **options}
    return (
        SessionRegistry(MemoryTransport(hub), node_id="node0", **settings_),
        SessionRegistry(MemoryTransport(hub), node_id="node1", **settings_),
    )


@pytest.mark.parametrize("verb", ["close", "revoke", "send"])
async def test_a_captured_command_replayed_on_another_keys_channel_is_dropped(verb: str) -> None:
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub, signing_keys=KEYS)
    async with node0, node1:
        own = RecordingConnection()
        victim = RecordingConnection()
        await node1.register(own, "attacker-session")
        await node1.register(victim, "victim-session")
        attacker = MemoryTransport(hub)
        sniffer = Sniffer()
        async with attacker.open(sniffer):
            own_channel = node1.names.channel(node1.names.key_hash("attacker-session"))
            victim_channel = node1.names.channel(node1.names.key_hash("victim-session"))
            await attacker.subscribe([own_channel])
            if verb == "close":
                await node0.close_all("attacker-session")  # an ordinary logout
            elif verb == "revoke":
                await node0.revoke("attacker-session")
            else:
                await node0.send_all("attacker-session", "for the attacker only")
            await wait_for(lambda: len(sniffer.captured) == 1)
            await attacker.publish(victim_channel, sniffer.captured[0][1])
            await settle(0.2)
        assert victim.close_code is None
        assert victim.sent == []
        assert not await node1.is_revoked("victim-session")
        assert node1.stats()["dropped_by_reason"] == {"channel": 1}


async def test_a_command_captured_before_a_data_loss_is_dropped_after_it() -> None:
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub, signing_keys=KEYS)
    async with node0, node1:
        await node1.register(RecordingConnection(), "session-a")
        channel = node1.names.channel(node1.names.key_hash("session-a"))
        attacker = MemoryTransport(hub)
        sniffer = Sniffer()
        async with attacker.open(sniffer):
            await attacker.subscribe([channel])
            await node0.send_all("session-a", "before the loss")
            await wait_for(lambda: len(sniffer.captured) == 1)
            hub.lose_data()
            await wait_for(lambda: node1.stats()["reconciles"] == 1 and node1.healthy)
            fresh = RecordingConnection()
            await node1.register(fresh, "session-a")
            await attacker.publish(channel, sniffer.captured[0][1])
            await settle(0.2)
        assert fresh.sent == []
        assert node1.stats()["dropped_by_reason"] == {"epoch": 1}


async def test_signed_commands_that_do_not_name_their_key_are_dropped_unless_allowed() -> None:
    """The previous release's commands: accepted only during a rolling upgrade."""
    for allowed in (False, True):
        hub = MemoryHub()
        node0, node1 = await _two_nodes(hub, signing_keys=KEYS, accept_unbound_commands=allowed)
        async with node0, node1:
            connection = RecordingConnection()
            await node1.register(connection, "session-a")
            channel = node1.names.channel(node1.names.key_hash("session-a"))
            sequence = await node0.transport.next_sequence()
            legacy = WireCodec(KEYS).encode(Command("send", "node0", sequence=sequence, data="legacy"))
            await node0.transport.publish(channel, legacy)
            await settle(0.2)
            if allowed:
                assert connection.sent == ["legacy"]
            else:
                assert connection.sent == []
                assert node1.stats()["dropped_by_reason"] == {"unbound": 1}


def _nested(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _nested,
    max_leaves=20,
)
_command_like = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), _json_values), "op": _json_values, "o": _json_values},
    optional={
        key: _json_values for key in ("s", "t", "c", "r", "x", "q", "d", "b", "n", "ob", "ttl", "i", "k", "e")
    },
)


def _decode_is_total(codec: WireCodec, payload: bytes) -> None:
    try:
        command = codec.decode(payload)
    except WireError:
        return
    assert isinstance(command, Command)
    assert 0 <= command.sequence <= MAX_SEQUENCE


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_gives_a_command_or_a_reason(payload: bytes) -> None:
    _decode_is_total(WireCodec(), payload)
    _decode_is_total(WireCodec(KEYS), payload)
    _decode_is_total(WireCodec(KEYS), WireCodec(KEYS).sign(payload))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_json_values, _command_like))
def test_decoding_arbitrary_json_gives_a_command_or_a_reason(value: object) -> None:
    body = json.dumps(value).encode()
    _decode_is_total(WireCodec(), body)
    _decode_is_total(WireCodec(KEYS), WireCodec(KEYS).sign(body))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v":1,"op":["close"],"o":"n"}', "malformed"),
        (b'{"v":1,"op":{"close":1},"o":"n"}', "malformed"),
        (b'{"v":1,"op":5,"o":"n"}', "op"),
        (b'{"v":1,"op":null,"o":"n"}', "op"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed"),
        (b'{"v":1,"op":"send","o":"n","d":' + b"[" * 50_000 + b"]" * 50_000 + b"}", "malformed"),
        (b'{"v":1,"op":"close","o":"n","s":1' + b"0" * 4000 + b"}", "malformed"),
        (b'{"v":1,"op":"close","o":"n","s":-5}', "malformed"),
        (b'{"v":1,"op":"revoke","o":"n","s":5,"ttl":NaN}', "malformed"),
        (b'{"v":1,"op":"revoke","o":"n","s":5,"ttl":Infinity}', "malformed"),
        (b'{"v":1,"op":"beat","o":"n","i":-1}', "malformed"),
        (b'{"v":1,"op":"send","o":"n","d":"' + b"x" * (2 << 20) + b'"}', "oversized"),
    ],
)
async def test_payloads_built_to_escape_the_decoder_are_counted_without_a_traceback(
    payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        with caplog.at_level(logging.DEBUG, logger="sessionws"):
            node.message_received(node.names.control, payload)
        assert node.stats()["dropped_by_reason"] == {reason: 1}
        assert not [record for record in caplog.records if record.exc_info]


async def test_one_message_cannot_push_the_replay_guard_past_the_broker() -> None:
    """A sequence far ahead of what the broker issued is checked and dropped; the
    origin's later, genuine commands still apply."""
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub)
    async with node0, node1:
        connection = RecordingConnection()
        await node1.register(connection, "session-a")
        key_hash = node1.names.key_hash("session-a")
        channel = node1.names.channel(key_hash)
        poison = Command("send", "node0", sequence=2**62, data="poison", key=key_hash, epoch=hub.identity)
        await node0.transport.publish(channel, WireCodec().encode(poison))
        await wait_for(lambda: node1.stats()["dropped_by_reason"] == {"sequence": 1})
        assert connection.sent == []
        await node0.send_all("session-a", "genuine")
        await node0.close_all("session-a")
        await wait_for(lambda: connection.close_code == 1000)
        assert connection.sent == ["genuine"]


async def test_a_flood_of_bad_messages_is_counted_in_full_and_logged_in_brief(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with SessionRegistry(MemoryTransport(MemoryHub()), **FAST) as node:
        with caplog.at_level(logging.WARNING, logger="sessionws"):
            for index in range(5000):
                node.message_received(node.names.control, b"garbage %d" % index)
                node.message_received(node.names.control, b'{"v":7,"op":"close","o":"x"}')
            lines = [record for record in caplog.records if "dropped" in record.getMessage()]
            assert len(lines) <= 10  # the first five of each reason
            node._drops.flush(time.monotonic() + 3600)
            summary = caplog.records[-1].getMessage()
        assert node.stats()["dropped_by_reason"] == {"malformed": 5000, "version": 5000}
        assert node.stats()["commands_dropped"] == 10_000
        assert "9990 more" in summary and "malformed: 4995" in summary and "version: 4995" in summary


async def test_a_quiet_node_far_behind_the_broker_still_applies_genuine_commands() -> None:
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub)
    async with node0, node1:
        connection = RecordingConnection()
        await node1.register(connection, "session-a")
        for _ in range(25_000):  # closes elsewhere in the cluster that node 1 never heard of
            await node0.transport.next_sequence()
        await node0.send_all("session-a", "one")
        await node0.send_all("session-a", "two")
        await wait_for(lambda: connection.sent == ["one", "two"] or len(connection.sent) == 2)
        assert sorted(connection.sent) == ["one", "two"]
        assert node1.stats()["dropped_by_reason"] == {}


async def test_a_flood_of_far_ahead_sequences_costs_one_check_and_is_dropped() -> None:
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub)
    async with node0, node1:
        connection = RecordingConnection()
        await node1.register(connection, "session-a")
        key_hash = node1.names.key_hash("session-a")
        channel = node1.names.channel(key_hash)
        for index in range(3000):
            poison = Command(
                "send", f"evil{index}", sequence=2**40 + index, data="x", key=key_hash, epoch=hub.identity
            )
            node1.message_received(channel, WireCodec().encode(poison))
        await wait_for(lambda: node1.stats()["dropped_by_reason"].get("sequence") == 3000)
        assert connection.sent == []


async def test_with_signing_a_marker_written_without_the_keys_is_not_believed() -> None:
    """A broker-side attacker without the keys writes a revoke marker for a victim, and
    copies a genuine one to another key: neither refuses the victim."""
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub, signing_keys=KEYS)
    async with node0, node1:
        names = node1.names
        forged_name = names.revoke_marker(names.key_hash("victim"))
        await node0.transport.mark(forged_name, encode_marker(4401, "forged", expires=time.time() + 600), 600)
        await node0.revoke("attacker")
        genuine = await node0.transport.read_markers([names.revoke_marker(names.key_hash("attacker"))])
        assert genuine[0] is not None
        copied_name = names.revoke_marker(names.key_hash("victim-2"))
        await node0.transport.mark(copied_name, genuine[0].value, 600)
        for victim in ("victim", "victim-2"):
            assert not await node1.is_revoked(victim)
            connection = RecordingConnection()
            await node1.register(connection, victim)
            await settle(0.1)
            assert connection.close_code is None
        assert node1.stats()["dropped_by_reason"].get("forged", 0) >= 2
        assert await node1.is_revoked("attacker")  # the genuine one still holds


async def test_without_signing_a_marker_of_unknown_shape_still_closes() -> None:
    """Fail-safe without keys: a marker nobody can read (here one built to make the
    parser recurse) still says the key was revoked."""
    hub = MemoryHub()
    node0, node1 = await _two_nodes(hub)
    async with node0, node1:
        name = node1.names.revoke_marker(node1.names.key_hash("session-a"))
        await node0.transport.mark(name, b"[" * 3000 + b"]" * 3000, 600)
        connection = RecordingConnection()
        await node1.register(connection, "session-a")
        await wait_for(lambda: connection.close_code == 4401)
