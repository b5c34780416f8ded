"""The ``sessionws`` admin command against a real Redis and three live registries.

Every test runs the real command (``python -m sessionws``) in a subprocess; the nodes
run in this process and hold recording connections, so the tests see what clients see.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import anyio
import pytest

from sessionws import CLOSE_REVOKED, SessionRegistry
from sessionws._cli import EXIT_NO_NODES
from tests._helpers import wait_for
from tests._nats_servers import NatsServer
from tests._plugins import install_transport_plugin
from tests._ports import free_port
from tests._redis_servers import RedisServer
from tests.cli.helpers import HEARTBEAT, CliCluster, CliResult, run_cli, start_cluster, together
from tests.core.helpers import RecordingConnection, settle

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

#: A key that must never show up in the command's output or logs.
KEY = "session-8c1fe0d2b7a94e5f"
OTHER = "session-other-31415"
SIGNING_KEY = "a-signing-key-of-32-bytes-length"


def assert_key_not_printed(*results: CliResult) -> None:
    for result in results:
        assert KEY not in result.out
        assert KEY not in result.err


async def connect(
    cluster: CliCluster, per_node: list[int], key: str = KEY
) -> list[list[RecordingConnection]]:
    """Register ``per_node[i]`` sockets of ``key`` on node i; return them by node."""
    connections: list[list[RecordingConnection]] = []
    for index, count in enumerate(per_node):
        node_connections = [RecordingConnection(f"{key}@node{index}#{n}") for n in range(count)]
        for connection in node_connections:
            await cluster[index].register(connection, key)
        connections.append(node_connections)
    return connections


async def test_close_reaches_every_node_and_spares_other_keys(cluster: CliCluster) -> None:
    sessions = [connection for node in await connect(cluster, [1, 2, 1]) for connection in node]
    others = [connection for node in await connect(cluster, [1, 1, 1], OTHER) for connection in node]

    result = await run_cli("close", KEY, *cluster.options(), "-vv")

    assert result.code == 0, result.err
    assert "close sent" in result.out
    await wait_for(lambda: all(connection.close_code == 1000 for connection in sessions))
    await settle(0.1)
    assert [connection.close_code for connection in others] == [None, None, None]
    assert [node.local_count(KEY) for node in cluster.nodes] == [0, 0, 0]
    assert [node.local_count(OTHER) for node in cluster.nodes] == [1, 1, 1]
    assert_key_not_printed(result)


async def test_confirm_reports_every_node_and_its_sockets(cluster: CliCluster) -> None:
    connections = await connect(cluster, [2, 1, 0])
    spared = connections[0][0]
    handle = next(iter(h for h in cluster[0].local_handles(KEY) if h.connection is spared))

    result = await run_cli(
        "close", KEY, *cluster.options(), "--confirm", "--json",
        "--code", "4000", "--reason", "log in again", "--exclude", handle.id,
    )  # fmt: skip

    assert result.code == 0, result.err
    assert result.data == {
        "command": "close",
        "confirmed": True,
        "complete": True,
        "total": 2,
        "nodes": {"node0": 1, "node1": 1, "node2": 0},
        "missing": [],
    }
    assert spared.close_code is None
    assert [(c.close_code, c.close_reason) for c in (connections[0][1], connections[1][0])] == [
        (4000, "log in again"),
        (4000, "log in again"),
    ]
    assert_key_not_printed(result)


async def test_confirm_in_words(cluster: CliCluster) -> None:
    await connect(cluster, [1, 1, 1])

    result = await run_cli("close", KEY, *cluster.options(), "--confirm")

    assert result.code == 0, result.err
    assert result.lines == [
        "closed 3 socket(s); 3 node(s) answered",
        "  node0: 1",
        "  node1: 1",
        "  node2: 1",
        "every live node answered",
    ]


async def test_a_live_node_that_no_longer_hears_the_broker_makes_it_incomplete(cluster: CliCluster) -> None:
    # node2 still beats (it publishes on its command connection) but its pub/sub side
    # no longer hears the control channel: a half-broken connection. It stays in the
    # membership and cannot answer, so the command must not claim completeness.
    deaf = cluster[2]
    await deaf.transport.unsubscribe([deaf.names.control])
    connections = await connect(cluster, [1, 1, 0])

    # Listening longer makes sure the CLI hears node2's beats even on a busy machine.
    listen = ["--heartbeat-interval", "0.6"]
    close = await run_cli(
        "close", KEY, *cluster.options(), *listen, "--confirm", "--json", "--timeout", "0.5"
    )
    count = await run_cli("count", OTHER, *cluster.options(), *listen, "--timeout", "0.5")

    assert close.code == 1, close.err
    assert close.data["complete"] is False
    assert close.data["missing"] == ["node2"]
    assert close.data["nodes"] == {"node0": 1, "node1": 1}
    assert all(node[0].close_code == 1000 for node in connections[:2])
    assert count.code == 1, count.err
    assert count.out == "0\n"
    assert "INCOMPLETE" in count.err


async def test_revoke_closes_everywhere_and_the_nodes_refuse_the_key(cluster: CliCluster) -> None:
    connections = await connect(cluster, [1, 1, 0])

    result = await run_cli("revoke", KEY, *cluster.options(), "--ttl", "60", "--confirm", "--json")

    assert result.code == 0, result.err
    assert result.data["complete"] is True
    assert result.data["total"] == 2
    assert [node[0].close_code for node in connections[:2]] == [CLOSE_REVOKED, CLOSE_REVOKED]
    for node in cluster.nodes:
        assert await node.is_revoked(KEY)
        assert not await node.is_revoked(OTHER)
    late = RecordingConnection("late")
    handle = await cluster[2].register(late, KEY)
    assert handle.closing
    await wait_for(lambda: late.close_code == CLOSE_REVOKED)
    assert_key_not_printed(result)


async def test_count_is_cluster_wide(cluster: CliCluster) -> None:
    await connect(cluster, [2, 1, 0])
    await connect(cluster, [1, 1, 1], OTHER)

    # Two admins at once: each CLI answers the other's question with 0 (it reads the
    # control channel too), so neither makes the other incomplete.
    in_words, as_json = await together(
        partial(run_cli, "count", KEY, *cluster.options()),
        partial(run_cli, "count", KEY, *cluster.options(), "--json"),
    )

    assert in_words.code == 0, in_words.err
    assert in_words.out == "3\n"
    assert as_json.code == 0, as_json.err
    assert as_json.data == {
        "command": "count",
        "total": 3,
        "complete": True,
        "members": ["node0", "node1", "node2"],
    }
    assert_key_not_printed(in_words, as_json)


async def test_nodes_lists_the_live_node_ids(cluster: CliCluster) -> None:
    extra = SessionRegistry(
        cluster.url, namespace=cluster.namespace, node_id="node3", heartbeat_interval=HEARTBEAT
    )
    async with extra:
        result = await run_cli("nodes", *cluster.options(), "--wait", "0.8")
    # node3 said goodbye and stopped beating.
    after = await run_cli("nodes", *cluster.options(), "--wait", "0.8", "--json")

    assert result.code == 0, result.err
    assert result.lines == ["node0", "node1", "node2", "node3"]
    assert after.code == 0, after.err
    assert after.data == {"command": "nodes", "nodes": ["node0", "node1", "node2"]}


async def test_settings_and_the_key_come_from_the_environment_and_stdin(redis_server: RedisServer) -> None:
    async with start_cluster(redis_server.url, signing_keys=[SIGNING_KEY]) as cluster:
        await connect(cluster, [1, 0, 1])
        environment = {
            "SESSIONWS_URL": cluster.url,
            "SESSIONWS_SIGNING_KEYS": f"{SIGNING_KEY}, another-old-key-of-32-bytes-long",
        }

        # One after the other: a running CLI reads the control channel too, and one with
        # other keys would not answer the others' questions.
        signed = await run_cli("count", "-", *cluster.options(url=False), env=environment, stdin=KEY + "\n")
        # --url wins over $SESSIONWS_URL.
        unsigned = await run_cli(
            "count", KEY, *cluster.options(), "--timeout", "0.3", env={"SESSIONWS_URL": "x://"}
        )
        wrong_key = await run_cli(
            "count", KEY, *cluster.options(), "--timeout", "0.3", "--signing-key", "x" * 32
        )

    assert signed.code == 0, signed.err
    assert signed.out == "2\n"
    # Nodes drop unsigned and forged commands: nobody answers, and the CLI says why. With
    # the wrong key the CLI drops the nodes' heartbeats too, so it heard no live node.
    assert unsigned.code == 1, unsigned.err
    assert "--signing-key" in unsigned.err
    assert wrong_key.code == EXIT_NO_NODES, wrong_key.err
    assert "signature check" in wrong_key.err
    assert_key_not_printed(signed, unsigned, wrong_key)


async def test_a_count_that_heard_no_node_fails_and_names_the_namespace(redis_server: RedisServer) -> None:
    result = await run_cli(
        "count", KEY, "--url", redis_server.url, "--namespace", "nobody-here", "--heartbeat-interval", "0.1"
    )
    assert result.code == EXIT_NO_NODES, result.err
    assert result.out == ""
    assert "no node is live in namespace 'nobody-here'" in result.err
    assert "nothing was counted" in result.err


@pytest.mark.parametrize("command", ["close", "revoke"])
async def test_a_confirmed_close_in_a_mistyped_namespace_fails(cluster: CliCluster, command: str) -> None:
    """A cron job's typo must not read as "every live node answered"."""
    connections = await connect(cluster, [1, 1, 1])
    options = [*cluster.options(), "--namespace", f"{cluster.namespace}-typo"]

    words = await run_cli(command, KEY, *options, "--confirm")
    as_json = await run_cli(command, KEY, *options, "--confirm", "--json")

    for result in (words, as_json):
        assert result.code == EXIT_NO_NODES, (result.out, result.err)
        assert f"no node is live in namespace '{cluster.namespace}-typo'" in result.err
        assert "every live node answered" not in result.out
    assert words.out == ""
    assert as_json.data["error"] == "no live node"
    assert as_json.data["complete"] is False
    await settle(0.2)
    assert all(connection.close_code is None for node in connections for connection in node)
    assert_key_not_printed(words, as_json)


async def test_the_nodes_command_hints_when_it_heard_nobody(redis_server: RedisServer) -> None:
    result = await run_cli(
        "nodes", "--url", redis_server.url, "--namespace", "nobody-here", "--heartbeat-interval", "0.1"
    )
    assert result.code == 0, result.err
    assert result.out == ""
    assert "no node of this namespace was heard from" in result.err


async def test_the_same_commands_work_over_nats(nats_server: NatsServer) -> None:
    async with start_cluster(nats_server.url) as cluster:
        await connect(cluster, [1, 1, 0])
        result = await run_cli("close", KEY, *cluster.options(), "--confirm", "--json")
    unreachable = await run_cli(
        "count", KEY, "--url", f"nats://127.0.0.1:{free_port()}", "--connect-timeout", "0.5"
    )

    assert result.code == 0, result.err
    assert result.data["nodes"] == {"node0": 1, "node1": 1, "node2": 0}
    assert result.data["complete"] is True
    assert unreachable.code == 3, unreachable.err
    assert "unreachable" in unreachable.err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["close", KEY], "no broker URL"),
        (["close", KEY, "--url", "carrier-pigeon://loft"], "unknown transport URL scheme"),
        (["close", KEY, "--url", "memory://"], "memory://"),
        (["close", KEY, "--url", "redis://127.0.0.1:1", "--code", "999"], "close code"),
        (["close", KEY, "--url", "redis://127.0.0.1:1", "--reason", "x" * 124], "123"),
        (["revoke", KEY, "--url", "redis://127.0.0.1:1", "--ttl", "-5"], "positive number of seconds"),
        (["count", KEY, "--url", "redis://127.0.0.1:1", "--timeout", "soon"], "not a number"),
        (["count", KEY, "--url", "redis://127.0.0.1:1", "--namespace", "has space"], "namespace"),
        (["count", KEY, "--url", "redis://127.0.0.1:1", "--signing-key", "short"], "16 bytes"),
        (["count", "", "--url", "redis://127.0.0.1:1"], "the key is empty"),
        (["count", "--url", "redis://127.0.0.1:1"], "required"),
        (["explode", KEY], "invalid choice"),
    ],
)
async def test_bad_usage_exits_2(arguments: list[str], message: str) -> None:
    result = await run_cli(*arguments)
    assert result.code == 2, result.err
    assert message in result.err
    assert result.out == ""


async def test_a_missing_extra_is_a_usage_error(tmp_path: Path) -> None:
    # A ``redis`` module that cannot be imported, first on the path: as if the extra
    # were not installed.
    (tmp_path / "redis.py").write_text("raise ImportError('redis is not installed')\n")
    result = await run_cli("close", KEY, "--url", "redis://127.0.0.1:1", env={"PYTHONPATH": str(tmp_path)})
    assert result.code == 2, result.err
    assert "pip install 'sessionws[redis]'" in result.err


async def test_any_transport_gets_the_connect_timeout_as_open_timeout(tmp_path: Path) -> None:
    # A third-party transport: the command knows nothing of it but the shared option.
    recorded = tmp_path / "options.json"
    install_transport_plugin(
        tmp_path,
        "sessionws-pigeon",
        "sessionws_pigeon",
        "import json\n"
        "from sessionws import MemoryTransport\n"
        "def make(url, **options):\n"
        f"    open({str(recorded)!r}, 'w').write(json.dumps(options))\n"
        "    return MemoryTransport()\n",
        {"pigeon": "sessionws_pigeon:make"},
    )
    result = await run_cli(
        "nodes",
        "--url",
        "pigeon://coop",
        "--connect-timeout",
        "3.5",
        "--wait",
        "0.1",
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.code == 0, result.err
    assert json.loads(recorded.read_text()) == {"open_timeout": 3.5}


async def test_an_unreachable_broker_exits_3_at_its_first_refusal() -> None:
    port = free_port()
    url = f"redis://:hunter2-password@127.0.0.1:{port}/0"
    with anyio.fail_after(60):  # only a hang guard
        result = await run_cli("close", KEY, "--url", url, "--connect-timeout", "0.5", "--confirm")
    assert result.code == 3, result.err
    assert "unreachable" in result.err
    # The refused connection itself is reported: the CLI did not retry until its deadline
    # ("no connection within 0.5 s").
    assert f"cannot connect to Redis at 127.0.0.1:{port}" in result.err
    assert "within" not in result.err
    assert "hunter2" not in result.err
    assert_key_not_printed(result)


async def test_help_and_version() -> None:
    version = await run_cli("--version")
    bare = await run_cli()
    assert version.code == 0
    assert version.out.startswith("sessionws ")
    assert bare.code == 0
    assert "close" in bare.out
    assert "revoke" in bare.out
